/** Guest image loading: ELF32 RISC-V executables into guest RAM. */
export {
  LoaderError,
  loadElf,
  parseElf,
  type ElfImage,
  type ElfSegment,
  type LoaderErrorCode,
} from './elf.js';
