/* hello: greets, reports the board as the guest sees it, powers off with "pass". */
#include "handoff.h"
#include "rt.h"

int main(void) {
  kprintf("hello from a Handoff guest (rv32ima, hart %u)\n", (unsigned)rt_boot_hartid);
  uint32_t end = rt_ram_end();
  uint32_t mib = (uint32_t)(((end == 0 ? 0x100000000ull : end) - rt_ram_base()) >> 20);
  kprintf("ram: 0x%08x..0x%08x (%u MiB, from %s), image ends at 0x%08x\n", (unsigned)rt_ram_base(),
          (unsigned)end, (unsigned)mib, rt_ram_source(), (unsigned)rt_free_start());
  if (hf_present()) {
    uint32_t v = hf_version();
    uint64_t gen = hf_generation();
    kprintf("control device: present, version %u.%u, features 0x%x\n", (unsigned)(v >> 16),
            (unsigned)(v & 0xffff), (unsigned)hf_features());
    kprintf("generation id: 0x%016llx, entropy[0]: 0x%08x\n", (unsigned long long)gen, (unsigned)hf_entropy(0));
    if (rt_host_args()[0] != 0) kprintf("host args: %s\n", rt_host_args());
  } else {
    kprintf("control device: absent\n");
  }
  kprintf("bye\n");
  return 0;
}
