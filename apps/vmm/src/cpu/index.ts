/** The RV32IMA + Zicsr + Zifencei hart (M and U modes): interpreter, decoder, architectural state. */
export { Hart, type HartOptions, type StopReason, type TimerPort } from './hart.js';
export { HART_STATE_VERSION, type HartState } from './state.js';
export { decodeInto } from './decode.js';
export { Op, OP_NAMES, type OpId } from './ops.js';
export {
  Cause,
  Csr,
  Interrupt,
  MIP_MEIP,
  MIP_MSIP,
  MIP_MTIP,
  MISA,
  PRIV_M,
  PRIV_U,
} from './arch.js';
