import { CODE_SLOT_INTS } from '../memory/code-pages.js';
import { Op, RD_SHIFT, RS1_SHIFT, RS2_SHIFT, X0_SINK, type OpId } from './ops.js';

// funct3-indexed tables; 0 marks a reserved encoding.
const BRANCHES = [Op.BEQ, Op.BNE, 0, 0, Op.BLT, Op.BGE, Op.BLTU, Op.BGEU] as const;
const LOADS = [Op.LB, Op.LH, Op.LW, 0, Op.LBU, Op.LHU, 0, 0] as const;
const STORES = [Op.SB, Op.SH, Op.SW, 0, 0, 0, 0, 0] as const;
const ALU = [Op.ADD, Op.SLL, Op.SLT, Op.SLTU, Op.XOR, Op.SRL, Op.OR, Op.AND] as const;
const MULDIV = [Op.MUL, Op.MULH, Op.MULHSU, Op.MULHU, Op.DIV, Op.DIVU, Op.REM, Op.REMU] as const;
const CSRS = [0, Op.CSRRW, Op.CSRRS, Op.CSRRC, 0, Op.CSRRWI, Op.CSRRSI, Op.CSRRCI] as const;

/**
 * Decodes one RV32IMA + Zicsr + Zifencei instruction word into slot `slot` of a code page:
 * `page[2*slot]` receives the packed op/registers (never 0), `page[2*slot+1]` the immediate
 * (for CSR ops: the CSR number; for ILLEGAL: the instruction bits, which become mtval).
 * Reserved and unsupported encodings (compressed, F/D, S-mode, custom) decode to ILLEGAL.
 */
export function decodeInto(word: number, page: Int32Array, slot: number): void {
  const w = word | 0;
  const at = slot * CODE_SLOT_INTS;
  const opcode = w & 0x7f;
  const rd = (w >>> 7) & 31;
  const f3 = (w >>> 12) & 7;
  const rs1 = (w >>> 15) & 31;
  const rs2 = (w >>> 20) & 31;
  const f7 = w >>> 25;
  const immI = w >> 20;
  let op: OpId = Op.ILLEGAL;
  let imm = w;
  switch (opcode) {
    case 0x37:
      op = Op.LUI;
      imm = w & 0xfffff000;
      break;
    case 0x17:
      op = Op.AUIPC;
      imm = w & 0xfffff000;
      break;
    case 0x6f:
      op = Op.JAL;
      imm =
        ((w >> 31) << 20) | (w & 0xff000) | (((w >>> 20) & 1) << 11) | (((w >>> 21) & 0x3ff) << 1);
      break;
    case 0x67:
      if (f3 === 0) {
        op = Op.JALR;
        imm = immI;
      }
      break;
    case 0x63: {
      const branch = BRANCHES[f3]!;
      if (branch !== 0) {
        op = branch as OpId;
        imm =
          ((w >> 31) << 12) |
          (((w >>> 7) & 1) << 11) |
          (((w >>> 25) & 0x3f) << 5) |
          (((w >>> 8) & 15) << 1);
      }
      break;
    }
    case 0x03: {
      const load = LOADS[f3]!;
      if (load !== 0) {
        op = load as OpId;
        imm = immI;
      }
      break;
    }
    case 0x23: {
      const store = STORES[f3]!;
      if (store !== 0) {
        op = store as OpId;
        imm = ((w >> 25) << 5) | ((w >>> 7) & 31);
      }
      break;
    }
    case 0x13:
      imm = immI;
      switch (f3) {
        case 0:
          op = Op.ADDI;
          break;
        case 2:
          op = Op.SLTI;
          break;
        case 3:
          op = Op.SLTIU;
          break;
        case 4:
          op = Op.XORI;
          break;
        case 6:
          op = Op.ORI;
          break;
        case 7:
          op = Op.ANDI;
          break;
        case 1:
          if (f7 === 0) {
            op = Op.SLLI;
            imm = rs2;
          }
          break;
        case 5:
          if (f7 === 0) op = Op.SRLI;
          else if (f7 === 0x20) op = Op.SRAI;
          imm = rs2;
          break;
      }
      if (op === Op.ILLEGAL) imm = w;
      break;
    case 0x33:
      if (f7 === 0) op = ALU[f3]!;
      else if (f7 === 1) op = MULDIV[f3]!;
      else if (f7 === 0x20 && f3 === 0) op = Op.SUB;
      else if (f7 === 0x20 && f3 === 5) op = Op.SRA;
      break;
    case 0x0f:
      if (f3 === 0) op = Op.FENCE;
      else if (f3 === 1) op = Op.FENCE_I;
      break;
    case 0x73:
      if (f3 === 0) {
        if (w === 0x00000073) op = Op.ECALL;
        else if (w === 0x00100073) op = Op.EBREAK;
        else if (w === 0x30200073) op = Op.MRET;
        else if (w === 0x10500073) op = Op.WFI;
      } else if (f3 !== 4) {
        op = CSRS[f3] as OpId;
        imm = w >>> 20;
      }
      break;
    case 0x2f:
      if (f3 === 2) {
        const funct5 = w >>> 27;
        switch (funct5) {
          case 0x02:
            if (rs2 === 0) op = Op.LR_W;
            break;
          case 0x03:
            op = Op.SC_W;
            break;
          case 0x01:
            op = Op.AMOSWAP_W;
            break;
          case 0x00:
            op = Op.AMOADD_W;
            break;
          case 0x04:
            op = Op.AMOXOR_W;
            break;
          case 0x0c:
            op = Op.AMOAND_W;
            break;
          case 0x08:
            op = Op.AMOOR_W;
            break;
          case 0x10:
            op = Op.AMOMIN_W;
            break;
          case 0x14:
            op = Op.AMOMAX_W;
            break;
          case 0x18:
            op = Op.AMOMINU_W;
            break;
          case 0x1c:
            op = Op.AMOMAXU_W;
            break;
        }
        imm = 0;
      }
      break;
  }
  if (op === Op.ILLEGAL) {
    page[at] = Op.ILLEGAL;
    page[at + 1] = w;
    return;
  }
  page[at] = op | ((rd === 0 ? X0_SINK : rd) << RD_SHIFT) | (rs1 << RS1_SHIFT) | (rs2 << RS2_SHIFT);
  page[at + 1] = imm;
}
