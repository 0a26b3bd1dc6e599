/**
 * Who is at the other end of a unix socket: the credentials the kernel recorded for the
 * connecting process (`SO_PEERCRED`). A server that must know which local process it serves
 * (memstore's lease channel binds each connection to a vmm process) reads them from the accepted
 * socket's fd; Node exposes it as `socket._handle.fd` on Linux.
 *
 * @packageDocumentation
 */
import { native, toShmError, type Classifier } from './native.js';
import { checkFd } from './validate.js';

/** The process at the other end of a unix socket, as the kernel saw it when it connected. */
export interface PeerCredentials {
  /**
   * Its process id (the thread group id: every thread of a process gives the same), or 0 when
   * that process lives in a pid namespace this process cannot see.
   */
  readonly pid: number;
  /** Its effective user id at connect time. */
  readonly uid: number;
  /** Its effective group id at connect time. */
  readonly gid: number;
}

const classify: Classifier = (errno) => {
  switch (errno) {
    case 'EBADF':
    case 'ENOTSOCK':
      return ['SHM_INVALID_ARGUMENT', 'pass the fd of a connected unix socket.'];
    case 'ENOPROTOOPT':
    case 'EOPNOTSUPP':
      return ['SHM_UNSUPPORTED', 'only unix (AF_UNIX) sockets carry peer credentials.'];
    default:
      return undefined;
  }
};

/**
 * The credentials of the process at the other end of the connected `AF_UNIX` socket `fd`
 * (`getsockopt(SO_PEERCRED)`): recorded by the kernel when the peer connected (or called
 * `socketpair`), so they cannot be forged by what the peer sends. They describe the peer as it
 * was then: a process that connected and later changed its uid still shows the old one.
 *
 * @param fd - a connected unix socket (e.g. `socket._handle.fd` of an accepted `net.Socket`)
 * @throws ShmError `SHM_INVALID_ARGUMENT` (not an open socket fd), `SHM_UNSUPPORTED` (a socket
 *   of another family), `SHM_SYSCALL_FAILED`
 */
export function peerCredentials(fd: number): PeerCredentials {
  const op = 'peerCredentials';
  checkFd(op, fd);
  try {
    const [pid, uid, gid] = native.peerCredentials(fd);
    return { pid, uid, gid };
  } catch (err) {
    throw toShmError(`${op}(fd ${fd})`, err, classify, [
      'SHM_SYSCALL_FAILED',
      'pass the fd of a connected unix socket.',
    ]);
  }
}
