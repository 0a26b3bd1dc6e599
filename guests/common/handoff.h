/*
 * The Handoff control device: the ONLY place guests know its register layout.
 * Mirrors apps/vmm/src/devices/control.ts (ControlReg, CONTROL_MAGIC, ...); keep both in step.
 *
 * It sits at 0x10200000 (a hole in QEMU virt's map). On QEMU it is absent: accesses fault,
 * and the common runtime's trap handler turns faults inside this window into "load reads 0,
 * store is dropped", so hf_present() is false and every helper degrades to a no-op.
 */
#ifndef GUEST_HANDOFF_H
#define GUEST_HANDOFF_H

#include <stdint.h>

#define HF_CTRL_BASE 0x10200000u
#define HF_CTRL_SIZE 0x1000u

/* Register offsets (bytes from HF_CTRL_BASE). All registers are 32-bit little-endian. */
#define HF_CTRL_MAGIC 0x000u /* RO: HF_MAGIC_VALUE ("HNDF") */
#define HF_CTRL_VERSION 0x004u /* RO: major << 16 | minor */
#define HF_CTRL_FEATURES 0x008u /* RO: HF_FEATURE_* bits */
#define HF_CTRL_READY_COUNT 0x00cu /* RO: how often READY was rung */
#define HF_CTRL_READY 0x010u /* WO: doorbell, 32-bit write of a tag: "ready / template point" */
#define HF_CTRL_GENERATION_LO 0x018u /* RO: VM generation id, low word */
#define HF_CTRL_GENERATION_HI 0x01cu /* RO: VM generation id, high word */
#define HF_CTRL_ENTROPY 0x040u /* RO: HF_ENTROPY_WORDS words of host entropy */
#define HF_CTRL_HOST_ARGS_LEN 0x080u /* RO: length of the host-args string in bytes */
#define HF_CTRL_HOST_ARGS 0x100u /* RO: host-args bytes (byte reads allowed) */

#define HF_MAGIC_VALUE 0x46444e48u /* "HNDF" as little-endian bytes */
#define HF_VERSION_MAJOR 1u
#define HF_FEATURE_READY 1u
#define HF_FEATURE_GENERATION 2u
#define HF_FEATURE_ENTROPY 4u
#define HF_FEATURE_HOST_ARGS 8u
#define HF_ENTROPY_WORDS 8u
#define HF_HOST_ARGS_SIZE 256u

/* READY tags the guests use (the host sees the tag; 0 is never used). */
#define HF_READY_TAG_HELLO 1u
#define HF_READY_TAG_KVSERVER 2u

/* True when the control device answers with the right magic and a known major version. */
int hf_present(void);
/* Interface version (major << 16 | minor), 0 when absent. */
uint32_t hf_version(void);
/* Feature bits, 0 when absent. */
uint32_t hf_features(void);
/* Rings the READY doorbell with `tag`. On the VMM the vCPU yields here: this is the template point. */
void hf_ready(uint32_t tag);
/* How often READY was rung in this VM's history (survives save/restore and clone). */
uint32_t hf_ready_count(void);
/* 64-bit VM generation id (changes on clone), 0 when absent. */
uint64_t hf_generation(void);
/* Entropy word k (k < HF_ENTROPY_WORDS), 0 when absent. Read again after a clone. */
uint32_t hf_entropy(unsigned k);
/*
 * Copies the host-args string (NUL-terminated, at most HF_HOST_ARGS_SIZE bytes + NUL) into
 * buf of `size` bytes; returns its length, 0 when absent or empty.
 */
unsigned hf_host_args(char *buf, unsigned size);

#endif
