import type { AccessWidth, MmioDevice } from '../memory/mmio.js';

/** NS16550A register offsets (register shift 0, as on QEMU virt). */
export const UartReg = {
  /** RBR (read) / THR (write); DLL when LCR.DLAB. */
  DATA: 0,
  /** IER; DLM when LCR.DLAB. */
  IER: 1,
  /** IIR (read) / FCR (write). */
  IIR_FCR: 2,
  LCR: 3,
  MCR: 4,
  LSR: 5,
  MSR: 6,
  SCR: 7,
} as const;

const IER_RDI = 0x01; // received data available
const IER_THRI = 0x02; // transmitter holding register empty
const IIR_NO_INT = 0x01;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_CTI = 0x0c;
const IIR_FIFO = 0xc0;
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
const FCR_CLEAR_TX = 0x04;
/** RX FIFO trigger levels selected by FCR bits 7:6. */
const RX_TRIGGER = [1, 4, 8, 14] as const;
const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;
const MCR_OUT2 = 0x08;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_DCD = 0x80;
const MSR_IDLE = MSR_DCD | MSR_DSR | MSR_CTS;
/** Host input held beyond this is dropped (the guest is not reading). */
const RX_LIMIT = 1 << 16;

/** Version of {@link UartState}. */
export const UART_STATE_VERSION = 1;

/** The UART as a model: its registers, pending THRE interrupt and received bytes not yet read. */
export interface UartState {
  readonly version: number;
  readonly ier: number;
  readonly lcr: number;
  readonly mcr: number;
  readonly fcr: number;
  readonly scr: number;
  /** Baud divisor (DLM:DLL). */
  readonly divisor: number;
  /** THR-empty interrupt pending (cleared by reading IIR or writing THR). */
  readonly thrInterrupt: boolean;
  /** Bytes received and not yet read by the guest, oldest first. */
  readonly rx: readonly number[];
}

/** Options of {@link Uart16550}. */
export interface UartOptions {
  /** Receives every transmitted byte. */
  readonly sink?: (byte: number) => void;
  /**
   * The interrupt output (to the PLIC). Called with the current level at every event that can
   * change it — register accesses and host input, as QEMU's serial device announces it — not
   * only when it changes: the PLIC marks a source pending whenever it hears a high level.
   */
  readonly onIrq?: (level: boolean) => void;
}

/**
 * NS16550A UART at 0x10000000 (QEMU virt). Transmission is instant (LSR.THRE and TEMT are
 * always set), so the guest's polling path costs one LSR read and one THR write per byte.
 * Received bytes queue in a deep FIFO fed by the host ({@link Uart16550.receive}): the host
 * side is flow-controlled, nothing is lost while the guest is slow.
 *
 * Interrupts follow QEMU's serial device: IIR reports, highest first, received data (RDA: data
 * present without FIFOs, at least the trigger level with them) or a character timeout (CTI:
 * FIFOs on, fewer bytes than the trigger level — the 4-character delay is zero here), then THR
 * empty (pending after every transmitted byte, after FCR clears the TX FIFO and when IER.THRI
 * is turned on; cleared by reading IIR while it is reported); with FIFOs on IIR's bits 7:6 are
 * set. Line-status and modem-status interrupts never fire (no line errors or modem changes).
 * Turning the FIFOs on or off clears both FIFOs, as on QEMU.
 */
export class Uart16550 implements MmioDevice {
  readonly name = 'uart0';
  readonly size = 0x100;
  private ier = 0;
  private lcr = 0;
  private mcr = MCR_OUT2;
  private fcr = 0;
  private scr = 0;
  private divisor = 0;
  private thrInterrupt = false;
  private rx: number[] = [];
  private rxHead = 0;
  private level = false;
  private readonly sink: (byte: number) => void;
  private readonly onIrq: ((level: boolean) => void) | undefined;

  constructor(
    readonly base: number,
    opts: UartOptions = {},
  ) {
    this.sink = opts.sink ?? (() => {});
    this.onIrq = opts.onIrq;
  }

  /** Queues bytes from the host for the guest to read. Returns how many were accepted. */
  receive(bytes: Uint8Array | readonly number[]): number {
    let accepted = 0;
    for (const b of bytes) {
      if (this.rxLength() >= RX_LIMIT) break;
      this.rx.push(b & 0xff);
      accepted++;
    }
    if (accepted > 0) this.updateIrq();
    return accepted;
  }

  /** Bytes waiting for the guest. */
  rxLength(): number {
    return this.rx.length - this.rxHead;
  }

  /** The interrupt output: IIR reports an interrupt. */
  get irqLevel(): boolean {
    return this.level;
  }

  read(offset: number, _width: AccessWidth): number {
    switch (offset) {
      case UartReg.DATA:
        if ((this.lcr & LCR_DLAB) !== 0) return this.divisor & 0xff;
        return this.popRx();
      case UartReg.IER:
        if ((this.lcr & LCR_DLAB) !== 0) return (this.divisor >>> 8) & 0xff;
        return this.ier;
      case UartReg.IIR_FCR: {
        const iir = this.iir();
        if ((iir & 0x0f) === IIR_THRI) {
          this.thrInterrupt = false;
          this.updateIrq();
        }
        return iir;
      }
      case UartReg.LCR:
        return this.lcr;
      case UartReg.MCR:
        return this.mcr;
      case UartReg.LSR:
        return LSR_THRE | LSR_TEMT | (this.rxLength() > 0 ? LSR_DR : 0);
      case UartReg.MSR:
        if ((this.mcr & MCR_LOOP) !== 0) {
          // Loopback: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
          const m = this.mcr;
          return ((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4);
        }
        return MSR_IDLE;
      case UartReg.SCR:
        return this.scr;
      default:
        return 0;
    }
  }

  write(offset: number, _width: AccessWidth, value: number): void {
    const v = value & 0xff;
    switch (offset) {
      case UartReg.DATA:
        if ((this.lcr & LCR_DLAB) !== 0) {
          this.divisor = (this.divisor & 0xff00) | v;
          return;
        }
        if ((this.mcr & MCR_LOOP) !== 0) {
          if (this.rxLength() < RX_LIMIT) this.rx.push(v);
        } else this.sink(v);
        this.thrInterrupt = true; // sent at once: THR is empty again
        this.updateIrq();
        return;
      case UartReg.IER:
        if ((this.lcr & LCR_DLAB) !== 0) {
          this.divisor = (this.divisor & 0xff) | (v << 8);
          return;
        }
        this.writeIer(v);
        return;
      case UartReg.IIR_FCR:
        this.writeFcr(v);
        return;
      case UartReg.LCR:
        this.lcr = v;
        return;
      case UartReg.MCR:
        this.mcr = v & 0x1f;
        return;
      case UartReg.SCR:
        this.scr = v;
        return;
      default:
        return; // LSR, MSR: read-only
    }
  }

  save(): UartState {
    return {
      version: UART_STATE_VERSION,
      ier: this.ier,
      lcr: this.lcr,
      mcr: this.mcr,
      fcr: this.fcr,
      scr: this.scr,
      divisor: this.divisor,
      thrInterrupt: this.thrInterrupt,
      rx: this.rx.slice(this.rxHead),
    };
  }

  /** Restores a saved model; the interrupt output is not announced (see {@link UartOptions.onIrq}). */
  restore(state: UartState): void {
    if (state.version !== UART_STATE_VERSION) {
      throw new Error(
        `UART state version ${state.version} is not supported (want ${UART_STATE_VERSION})`,
      );
    }
    this.ier = state.ier & 0x0f;
    this.lcr = state.lcr & 0xff;
    this.mcr = state.mcr & 0x1f;
    this.fcr = state.fcr & 0xc9;
    this.scr = state.scr & 0xff;
    this.divisor = state.divisor & 0xffff;
    this.thrInterrupt = state.thrInterrupt;
    this.rx = state.rx.slice(0, RX_LIMIT).map((b) => b & 0xff);
    this.rxHead = 0;
    // Not an event: the output level is recomputed, not announced (the PLIC restores its own).
    this.level = (this.iir() & IIR_NO_INT) === 0;
  }

  /** IER: a change of THRI re-arms (or drops) the THR-empty interrupt; no change, no update. */
  private writeIer(v: number): void {
    const changed = (this.ier ^ v) & 0x0f;
    this.ier = v & 0x0f;
    if ((changed & IER_THRI) !== 0) this.thrInterrupt = (this.ier & IER_THRI) !== 0;
    if (changed !== 0) this.updateIrq();
  }

  /** FCR: turning the FIFOs on or off clears both; bit 1 clears RX, bit 2 TX (THR empty). */
  private writeFcr(v: number): void {
    let f = v;
    if (((f ^ this.fcr) & FCR_ENABLE) !== 0) f |= FCR_CLEAR_RX | FCR_CLEAR_TX;
    if ((f & FCR_CLEAR_RX) !== 0) this.clearRx();
    if ((f & FCR_CLEAR_TX) !== 0) this.thrInterrupt = true;
    this.fcr = f & 0xc9;
    this.updateIrq();
  }

  private iir(): number {
    const fifo = (this.fcr & FCR_ENABLE) !== 0;
    const bits = fifo ? IIR_FIFO : 0;
    const n = this.rxLength();
    if ((this.ier & IER_RDI) !== 0 && n > 0) {
      if (!fifo || n >= RX_TRIGGER[this.fcr >>> 6]!) return bits | IIR_RDI;
      return bits | IIR_CTI;
    }
    if ((this.ier & IER_THRI) !== 0 && this.thrInterrupt) return bits | IIR_THRI;
    // Line-status and modem-status interrupts never fire: no errors or modem changes are modelled.
    return bits | IIR_NO_INT;
  }

  /** RBR: the oldest received byte (0 when none); announces the interrupt level either way. */
  private popRx(): number {
    let b = 0;
    if (this.rxHead < this.rx.length) {
      b = this.rx[this.rxHead++]!;
      if (this.rxHead > 4096 && this.rxHead * 2 > this.rx.length) {
        this.rx = this.rx.slice(this.rxHead);
        this.rxHead = 0;
      }
    }
    this.updateIrq();
    return b;
  }

  private clearRx(): void {
    this.rx = [];
    this.rxHead = 0;
  }

  /** Recomputes the interrupt output and announces it (QEMU's `serial_update_irq`). */
  private updateIrq(): void {
    this.level = (this.iir() & IIR_NO_INT) === 0;
    this.onIrq?.(this.level);
  }
}
