import { commonOptions, type ConfigOf, type ConfigSpec } from '@handoff/service';

/** Default port of the first vmm instance (vmm-a); the cluster launcher gives vmm-b the next one. */
export const VMM_DEFAULT_PORT = 7201;

/** Flags (`--name`) and variables (`HANDOFF_VMM_NAME`) of a vmm instance. */
export const vmmOptions = {
  ...commonOptions(VMM_DEFAULT_PORT),
  id: {
    type: 'string',
    default: 'vmm-a',
    description: 'instance id, unique in the cluster (lower-case letters, digits, dashes)',
  },
  migrator: {
    type: 'string',
    default: '127.0.0.1:7000',
    env: 'HANDOFF_MIGRATOR_ADDR',
    description: 'migrator address to register with (host:port)',
  },
  memstore: {
    type: 'string',
    default: '127.0.0.1:7100',
    env: 'HANDOFF_MEMSTORE_ADDR',
    description: "memstore address (host:port): this host's memstore, whose files the vmm maps",
  },
  'host-id': {
    type: 'string',
    default: 'host-1',
    env: 'HANDOFF_VMM_HOST_ID',
    description:
      'the host this instance runs on: the vmm instances of one host share its memstore (--memstore) ' +
      'and its files; sent with every registration (lower-case letters, digits, dashes)',
  },
  'max-vm-memory': {
    type: 'string',
    default: '2G',
    description:
      'largest total RAM of one VM, with a binary unit (e.g. 512M, 2G); bigger specs are refused',
  },
  'guest-dir': {
    type: 'string',
    description:
      'the one folder guest images other than the built-ins are read from: a guest named ' +
      '"x.elf" or "sub/x.elf" (or an absolute path inside it) is that file, whose real path must ' +
      'stay inside the folder; default: none (built-in guests only)',
  },
  'built-in-guest-dir': {
    type: 'string',
    description:
      'folder of the built-in guests (<name>/<name>.elf, conformance/prebuilt/<test>.elf); ' +
      'default: guests/ of this installation',
  },
  'vcpu-threads': {
    type: 'number',
    default: 0,
    min: 0,
    max: 256,
    description:
      'vCPU threads kept standing; each runs many VMs, round-robin in slices of ≈0.25–1 ms ' +
      '(0: one per core)',
  },
  'max-vcpu-threads': {
    type: 'number',
    default: 0,
    min: 0,
    max: 1024,
    description:
      'most vCPU threads: the pool grows beyond --vcpu-threads only while every thread has a ' +
      'busy VM (not waiting in WFI), and shrinks back when they idle (0: twice the cores)',
  },
  'spare-vcpu-threads': {
    type: 'number',
    default: 1,
    min: 0,
    max: 16,
    description:
      'vCPU threads the pool starts at once when every thread has had a busy VM for a while ' +
      '(later VMs go there, and none waits ≈50–100 ms for a thread to start); 0: the pool ' +
      'never grows beyond --vcpu-threads',
  },
  'data-channel': {
    type: 'string',
    default: 'auto',
    description:
      'where incoming migrations may also arrive as a raw socket stream, beside gRPC (faster ' +
      'pages, shorter pause): auto (a unix socket in the temp folder), unix:/path, ' +
      'host:port, or off',
  },
  'data-channel-frame-timeout-ms': {
    type: 'number',
    default: 10_000,
    min: 100,
    max: 600_000,
    description:
      'how long a frame of an incoming migration on the data channel may take to arrive once ' +
      'begun: a source that stalls mid-frame fails that migration and its connection is closed',
  },
  'switchover-dir': {
    type: 'string',
    default: 'auto',
    description:
      'folder where an incoming migration creates its switchover slot: when all RAM travels by ' +
      "reference, the source's vCPU thread hands the device state to this VM's vCPU thread " +
      'through it, which takes the lease and runs the guest at once. Both vmms of a migration ' +
      'must see the folder. auto (/dev/shm, else the temp folder), an absolute path, or off ' +
      '(the state travels on the migration stream)',
  },
  'advertise-address': {
    type: 'string',
    description: 'address other services use to reach this instance (default: the bound address)',
  },
} as const satisfies ConfigSpec;

export type VmmConfig = ConfigOf<typeof vmmOptions>;
