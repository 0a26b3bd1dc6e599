import type { HartState } from '../cpu/state.js';
import type { ClintState } from '../devices/clint.js';
import type { ClockState } from '../devices/clock.js';
import type { ControlState } from '../devices/control.js';
import type { PlicState } from '../devices/plic.js';
import type { FinisherState } from '../devices/test-finisher.js';
import type { UartState } from '../devices/uart16550.js';

/** Version of the {@link MachineState} set of sections. */
export const MACHINE_STATE_VERSION = 1;

/**
 * Device state of a whole machine, one named section per component (each with its own
 * version). RAM is not included: it is handed off or copied separately. Plain data: survives
 * JSON and structured clone.
 */
export interface MachineState {
  readonly version: number;
  readonly cpu: HartState;
  readonly clock: ClockState;
  readonly clint: ClintState;
  readonly uart: UartState;
  readonly finisher: FinisherState;
  readonly control: ControlState;
  /** Since device-state format 1.1; a 1.0 container loads with the PLIC's reset state. */
  readonly plic: PlicState;
}
