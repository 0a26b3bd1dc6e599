/*
 * Guest startup: QEMU virt's reset ROM (and the Handoff VMM) enter here in M-mode with
 * a0 = hart id and a1 = device-tree address (0 when there is none).
 *
 *   - one hart wins a lottery and runs; any other parks in WFI
 *   - mtvec -> rt_trap_entry (direct mode), interrupts stay disabled
 *   - gp, sp (top of the image's stack) and tp (TLS block) are set
 *   - .bss/.tbss are cleared (RAM need not be zero), a0/a1 saved for the runtime
 *   - rt_init(), main(0, 0), rt_exit(main's return value)
 */
	.section .text.start, "ax", @progbits
	.globl _start
	.type _start, @function
_start:
	csrw	mie, zero
	csrci	mstatus, 8		/* MIE = 0 */
	la	t0, rt_trap_entry
	csrw	mtvec, t0

	/* first hart wins; the others park (QEMU virt -smp N starts all harts here) */
	la	t0, rt_hart_lottery
	li	t1, 1
	amoswap.w t1, t1, (t0)
	bnez	t1, .Lpark

	.option push
	.option norelax
	la	gp, __global_pointer$
	.option pop
	la	sp, __stack_top
	la	tp, __tls_base

	la	t0, __bss_start
	la	t1, __bss_end
1:	bgeu	t0, t1, 2f
	sw	zero, 0(t0)
	addi	t0, t0, 4
	j	1b
2:
	la	t0, rt_boot_hartid
	sw	a0, 0(t0)
	la	t0, rt_boot_dtb
	sw	a1, 0(t0)

	call	rt_init
	li	a0, 0
	li	a1, 0
	call	main
	call	rt_exit
.Lpark:
	wfi
	j	.Lpark
	.size _start, . - _start

/*
 * Trap entry: saves x1..x31 in a frame on the current stack, calls rt_trap(frame) (C),
 * restores the (possibly edited) registers and returns with mret. rt_trap may change
 * mepc and frame->x[rd] (that is how absent-device loads read 0).
 */
	.text
	.globl rt_trap_entry
	.type rt_trap_entry, @function
	.balign 4
rt_trap_entry:
	addi	sp, sp, -128
	sw	x1, 4(sp)
	sw	x3, 12(sp)
	sw	x4, 16(sp)
	sw	x5, 20(sp)
	sw	x6, 24(sp)
	sw	x7, 28(sp)
	sw	x8, 32(sp)
	sw	x9, 36(sp)
	sw	x10, 40(sp)
	sw	x11, 44(sp)
	sw	x12, 48(sp)
	sw	x13, 52(sp)
	sw	x14, 56(sp)
	sw	x15, 60(sp)
	sw	x16, 64(sp)
	sw	x17, 68(sp)
	sw	x18, 72(sp)
	sw	x19, 76(sp)
	sw	x20, 80(sp)
	sw	x21, 84(sp)
	sw	x22, 88(sp)
	sw	x23, 92(sp)
	sw	x24, 96(sp)
	sw	x25, 100(sp)
	sw	x26, 104(sp)
	sw	x27, 108(sp)
	sw	x28, 112(sp)
	sw	x29, 116(sp)
	sw	x30, 120(sp)
	sw	x31, 124(sp)
	addi	t0, sp, 128
	sw	t0, 8(sp)		/* the interrupted sp, for the report */
	sw	zero, 0(sp)
	mv	a0, sp
	call	rt_trap
	lw	x1, 4(sp)
	lw	x3, 12(sp)
	lw	x4, 16(sp)
	lw	x5, 20(sp)
	lw	x6, 24(sp)
	lw	x7, 28(sp)
	lw	x8, 32(sp)
	lw	x9, 36(sp)
	lw	x10, 40(sp)
	lw	x11, 44(sp)
	lw	x12, 48(sp)
	lw	x13, 52(sp)
	lw	x14, 56(sp)
	lw	x15, 60(sp)
	lw	x16, 64(sp)
	lw	x17, 68(sp)
	lw	x18, 72(sp)
	lw	x19, 76(sp)
	lw	x20, 80(sp)
	lw	x21, 84(sp)
	lw	x22, 88(sp)
	lw	x23, 92(sp)
	lw	x24, 96(sp)
	lw	x25, 100(sp)
	lw	x26, 104(sp)
	lw	x27, 108(sp)
	lw	x28, 112(sp)
	lw	x29, 116(sp)
	lw	x30, 120(sp)
	lw	x31, 124(sp)
	addi	sp, sp, 128
	mret
	.size rt_trap_entry, . - rt_trap_entry

	.data
	.balign 4
rt_hart_lottery:
	.word	0
