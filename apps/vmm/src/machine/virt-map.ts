/** The QEMU `virt` physical memory map, as far as Handoff implements it. */
export const VirtMap = {
  /** SiFive test finisher. */
  TEST: 0x0010_0000,
  /** Core-local interruptor (msip, mtimecmp, mtime). */
  CLINT: 0x0200_0000,
  /** Platform-level interrupt controller (external interrupts: the UART is source 10). */
  PLIC: 0x0c00_0000,
  /** NS16550A UART 0. */
  UART0: 0x1000_0000,
  /** Handoff control device (free on QEMU virt). */
  CONTROL: 0x1020_0000,
  /** Main RAM. */
  DRAM: 0x8000_0000,
} as const;

/** Default main RAM size (QEMU virt's default, 128 MiB). */
export const DEFAULT_RAM_SIZE = 128 * 1024 * 1024;
