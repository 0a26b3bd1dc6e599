/*
 * The vectored trap table of the interrupt runtime (irq.h): mtvec = rt_irq_vectors | 1.
 * Exceptions (entry 0) and unexpected interrupts go to the runtime's rt_trap_entry (crt0.S);
 * a software or timer interrupt clears its enable bit in mie and returns (it only had to end a
 * WFI); the machine external interrupt saves the caller-saved registers, runs irq_dispatch (C)
 * and returns.
 */
	.section .text.rt_irq_vectors, "ax", @progbits
	.balign 64
	.globl rt_irq_vectors
	.type rt_irq_vectors, @function
rt_irq_vectors:
	j	rt_trap_entry		/* 0: exceptions */
	j	rt_trap_entry
	j	rt_trap_entry
	j	.Lsoftware		/* 3: machine software */
	j	rt_trap_entry
	j	rt_trap_entry
	j	rt_trap_entry
	j	.Ltimer			/* 7: machine timer */
	j	rt_trap_entry
	j	rt_trap_entry
	j	rt_trap_entry
	j	.Lexternal		/* 11: machine external */

.Lsoftware:
	csrci	mie, 8
	mret

.Ltimer:
	csrw	mscratch, t0
	li	t0, 0x80
	csrc	mie, t0
	csrr	t0, mscratch
	mret

.Lexternal:
	addi	sp, sp, -64
	sw	ra, 0(sp)
	sw	t0, 4(sp)
	sw	t1, 8(sp)
	sw	t2, 12(sp)
	sw	a0, 16(sp)
	sw	a1, 20(sp)
	sw	a2, 24(sp)
	sw	a3, 28(sp)
	sw	a4, 32(sp)
	sw	a5, 36(sp)
	sw	a6, 40(sp)
	sw	a7, 44(sp)
	sw	t3, 48(sp)
	sw	t4, 52(sp)
	sw	t5, 56(sp)
	sw	t6, 60(sp)
	call	irq_dispatch
	lw	ra, 0(sp)
	lw	t0, 4(sp)
	lw	t1, 8(sp)
	lw	t2, 12(sp)
	lw	a0, 16(sp)
	lw	a1, 20(sp)
	lw	a2, 24(sp)
	lw	a3, 28(sp)
	lw	a4, 32(sp)
	lw	a5, 36(sp)
	lw	a6, 40(sp)
	lw	a7, 44(sp)
	lw	t3, 48(sp)
	lw	t4, 52(sp)
	lw	t5, 56(sp)
	lw	t6, 60(sp)
	addi	sp, sp, 64
	mret
	.size rt_irq_vectors, . - rt_irq_vectors
