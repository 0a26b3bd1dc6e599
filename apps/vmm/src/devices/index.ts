/** Board devices of the QEMU-virt-compatible machine, and the time sources behind mtime. */
export {
  CLOCK_STATE_VERSION,
  DeterministicClock,
  MTIME_HZ,
  RealtimeClock,
  createClock,
  type Clock,
  type ClockState,
  type InstructionCounter,
  type TimeMode,
} from './clock.js';
export { CLINT_STATE_VERSION, Clint, ClintReg, type ClintState } from './clint.js';
export {
  CONTROL_MAGIC,
  CONTROL_STATE_VERSION,
  CONTROL_VERSION,
  ControlDevice,
  ControlFeature,
  ControlReg,
  ENTROPY_WORDS,
  HOST_ARGS_SIZE,
  type ControlIdentity,
  type ControlState,
} from './control.js';
export {
  PLIC_CONTEXTS,
  PLIC_PRIORITY_MASK,
  PLIC_SIZE,
  PLIC_SOURCES,
  PLIC_STATE_VERSION,
  PLIC_WORDS,
  Plic,
  PlicContext,
  PlicReg,
  PlicSource,
  plicResetState,
  type PlicOutput,
  type PlicState,
} from './plic.js';
export {
  FINISHER_FAIL,
  FINISHER_PASS,
  FINISHER_RESET,
  FINISHER_STATE_VERSION,
  TestFinisher,
  type ExitStatus,
  type FinisherState,
} from './test-finisher.js';
export {
  UART_STATE_VERSION,
  Uart16550,
  UartReg,
  type UartOptions,
  type UartState,
} from './uart16550.js';
