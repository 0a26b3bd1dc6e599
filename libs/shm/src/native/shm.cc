// handoff_shm: memory mappings for Handoff.
//
// A thin layer over mmap(2) and friends. Argument validation, defaults and error wording live in
// TypeScript (src/*.ts); this file trusts its (internal) caller for ranges and only reports errno.
//
// Ownership. Every mapping is a Region: one mmap'ed address range with a reference count. The JS
// owner (an External held by the TS `Mapping`) holds one reference; each V8 backing store over the
// range holds another and drops it from its deleter, which V8 calls when the last JS buffer using
// that backing store is gone (in any isolate, possibly on a background thread). The last reference
// unmaps. So:
//   - close() never unmaps memory a live buffer still points at. If buffers remain, close() instead
//     *revokes* the range: it atomically replaces the file pages with anonymous zero pages
//     (mmap MAP_FIXED), so the file is released now and stale views can neither crash the process
//     nor reach the file. The address range itself is unmapped by the last backing-store deleter.
//   - dropping the owner without close() releases only the owner's reference.
//   - remap() swaps what backs a live range (MAP_SHARED <-> MAP_PRIVATE of the same file) with
//     mmap(MAP_FIXED) at the same address, so buffers already handed out stay valid; it can move
//     the old mapping's page tables aside first (mremap) and leave their unmap for later.
//   - overlay() maps a range of another file MAP_PRIVATE over part of a live range the same way
//     (a clone's chain of snapshot layers).
//
// V8 bridge. Buffers are created with the V8 API rather than napi_create_external_arraybuffer:
//   - SharedArrayBuffer (v8::SharedArrayBuffer::NewBackingStore with our deleter): shareable with
//     worker threads (postMessage keeps the same memory), usable with Atomics, and not counted as
//     per-isolate external memory, so mapping gigabytes never forces a GC.
//   - ArrayBuffer (v8::ArrayBuffer::NewBackingStore): detachable on close(); V8 counts it as
//     external memory, so large ones can trigger a full GC.
// N-API has no SharedArrayBuffer constructor for external memory, so a v8::Local is converted to a
// napi_value by value (Node's own JsValueFromV8LocalValue does the same). The addon is built from
// source against the headers of the Node that runs it, which keeps this sound.
//
// Cross-process words. futexWait/futexWake, futexWaitAny and the atomic32 functions work on int32s of any
// ArrayBuffer or SharedArrayBuffer (in practice a MAP_SHARED mapping made here). They use the
// shared (not _PRIVATE) futex operations and __atomic builtins, because JS Atomics on a non-shared
// ArrayBuffer promise nothing across processes, and Atomics.wait only wakes threads of one process.
// The buffer argument is read through the V8 API (N-API has no SharedArrayBuffer accessors) via
// the reverse of ToNapi.
//
// Blocking sockets. connectUnix returns a *blocking* AF_UNIX stream fd with send and receive
// timeouts, for worker threads that read and write it with fs.readSync/fs.writeSync (a timed-out
// call fails with EAGAIN) without involving the event loop.

#include <napi.h>
#include <v8.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

// futex_waitv (Linux 5.16) as the kernel defines it, for headers older than the call.
#ifndef FUTEX_WAITV_MAX
#define FUTEX_32 2
#define FUTEX_WAITV_MAX 128
struct futex_waitv {
  __u64 val;
  __u64 uaddr;
  __u32 flags;
  __u32 __reserved;
};
#endif
// mremap flag of Linux 5.7 (for all mappings since 5.13), for headers older than it.
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

std::atomic<int64_t> g_regions{0};  // regions whose address range is still mapped
std::atomic<int64_t> g_bytes{0};    // their total span in bytes

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

size_t RoundUpToPage(size_t n) {
  const size_t page = PageSize();
  return (n + page - 1) / page * page;
}

// One mapped address range. All state changes happen under `mu`, so a revoke (close) never races
// the final unmap (a backing-store deleter on another thread).
struct Region {
  std::mutex mu;
  uint8_t* addr = nullptr;
  size_t span = 0;  // bytes covered by mmap (the exposed length rounded up to pages)
  int refs = 0;     // owner + live backing stores
};

void Unref(Region* region) {
  bool last = false;
  {
    std::lock_guard<std::mutex> lock(region->mu);
    last = --region->refs == 0;
    if (last) munmap(region->addr, region->span);
  }
  if (last) {
    g_regions.fetch_sub(1);
    g_bytes.fetch_sub(static_cast<int64_t>(region->span));
    delete region;
  }
}

// V8 BackingStore deleter: may run on any thread; touches no JS.
void ReleaseBackingStore(void* /*data*/, size_t /*length*/, void* deleter_data) {
  Unref(static_cast<Region*>(deleter_data));
}

// What the JS owner holds (inside a Napi::External).
struct Owner {
  Region* region = nullptr;          // null once closed
  Napi::Reference<Napi::Object> ab;  // weak reference to a detachable ArrayBuffer, else empty
};

void FinalizeOwner(Napi::Env /*env*/, Owner* owner) {
  if (owner->region != nullptr) Unref(owner->region);
  delete owner;
}

[[noreturn]] void ThrowErrno(Napi::Env env, const char* syscall, int err) {
  Napi::Error error = Napi::Error::New(env, std::string(syscall) + ": " + std::strerror(err));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  throw error;
}

[[noreturn]] void ThrowClosed(Napi::Env env) {
  Napi::Error error = Napi::Error::New(env, "mapping is closed");
  error.Set("closed", Napi::Boolean::New(env, true));
  throw error;
}

napi_value ToNapi(v8::Local<v8::Value> value) {
  static_assert(sizeof(napi_value) == sizeof(v8::Local<v8::Value>),
                "napi_value and v8::Local must have the same representation");
  napi_value result;
  std::memcpy(static_cast<void*>(&result), static_cast<const void*>(&value), sizeof(result));
  return result;
}

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int64Value();
}

Region* OpenRegion(const Napi::CallbackInfo& info) {
  Owner* owner = info[0].As<Napi::External<Owner>>().Data();
  if (owner->region == nullptr) ThrowClosed(info.Env());
  return owner->region;
}

// map(fd, offset, length, shared, populate, sharedBuffer) -> [owner, buffer, address]
Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const int64_t offset = ArgInt(info, 1);
  const size_t length = static_cast<size_t>(ArgInt(info, 2));
  const bool shared = info[3].ToBoolean();
  const bool populate = info[4].ToBoolean();
  const bool shared_buffer = info[5].ToBoolean();

  const size_t span = RoundUpToPage(length);
  int flags = shared ? MAP_SHARED : MAP_PRIVATE;
  if (populate) flags |= MAP_POPULATE;
  void* addr = mmap(nullptr, span, PROT_READ | PROT_WRITE, flags, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) ThrowErrno(env, "mmap", errno);

  Region* region = new Region();
  region->addr = static_cast<uint8_t*>(addr);
  region->span = span;
  region->refs = 2;  // the owner and the backing store created below
  g_regions.fetch_add(1);
  g_bytes.fetch_add(static_cast<int64_t>(span));

  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::Local<v8::Value> buffer;
  if (shared_buffer) {
    std::shared_ptr<v8::BackingStore> store =
        v8::SharedArrayBuffer::NewBackingStore(addr, length, ReleaseBackingStore, region);
    buffer = v8::SharedArrayBuffer::New(isolate, std::move(store));
  } else {
    std::shared_ptr<v8::BackingStore> store =
        v8::ArrayBuffer::NewBackingStore(addr, length, ReleaseBackingStore, region);
    buffer = v8::ArrayBuffer::New(isolate, std::move(store));
  }
  Napi::Object js_buffer = Napi::Value(env, ToNapi(buffer)).As<Napi::Object>();

  Owner* owner = new Owner();
  owner->region = region;
  if (!shared_buffer) owner->ab = Napi::Weak(js_buffer);

  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Napi::External<Owner>::New(env, owner, FinalizeOwner));
  result.Set(1u, js_buffer);
  result.Set(2u, Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(addr))));
  return result;
}

// close(owner) -> 'unmapped' | 'revoked' | 'already-closed'
Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Owner* owner = info[0].As<Napi::External<Owner>>().Data();
  Region* region = owner->region;
  if (region == nullptr) return Napi::String::New(env, "already-closed");
  owner->region = nullptr;

  // Detach our ArrayBuffer if this isolate still has it attached. That drops its backing store at
  // once unless someone else (another thread it was transferred to, an in-flight native call)
  // still holds it.
  if (!owner->ab.IsEmpty()) {
    Napi::Object value = owner->ab.Value();
    if (!value.IsEmpty() && value.IsArrayBuffer()) {
      Napi::ArrayBuffer ab = value.As<Napi::ArrayBuffer>();
      if (!ab.IsDetached()) ab.Detach();
    }
    owner->ab.Reset();
  }

  int revoke_error = 0;
  bool revoked = false;
  {
    std::lock_guard<std::mutex> lock(region->mu);
    if (region->refs > 1) {
      void* again = mmap(region->addr, region->span, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
      if (again == MAP_FAILED) {
        revoke_error = errno;
      } else {
        revoked = true;
      }
    }
  }
  Unref(region);
  if (revoke_error != 0) ThrowErrno(env, "mmap", revoke_error);
  return Napi::String::New(env, revoked ? "revoked" : "unmapped");
}

// Maps `length` bytes of `fd` at `file_offset` over [offset, offset + length) of a live range
// with one mmap(MAP_FIXED) (`flags`: MAP_SHARED or MAP_PRIVATE), region->mu held. Answers 0 or
// the errno of a failure; a failure that left part of the range unmapped (msync then answers
// ENOMEM) fills the whole range with anonymous zero pages, as a revoke does, so no view can
// fault, and sets `lost`.
static int MapFixedOrRevoke(Region* region, size_t offset, size_t length, int flags, int fd,
                            int64_t file_offset, bool* lost) {
  void* again = mmap(region->addr + offset, length, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd,
                     static_cast<off_t>(file_offset));
  if (again != MAP_FAILED) return 0;
  const int err = errno;
  if (msync(region->addr + offset, length, MS_ASYNC) != 0 && errno == ENOMEM) {
    *lost = true;
    mmap(region->addr, region->span, PROT_READ | PROT_WRITE,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  }
  return err;
}

// A range a remap moved the old mapping to: its page tables, at an address no buffer knows,
// waiting to be unmapped off the caller's path (unmapping drops the page-table entry of every
// page the old mapping had touched, which takes time in proportion to them). Shared by the JS
// handle and an unmap in flight; the last of them to go unmaps it if nobody did.
struct Retired {
  std::mutex mu;
  uint8_t* addr = nullptr;  // null once unmapped
  size_t span = 0;
  ~Retired() {
    if (addr != nullptr) munmap(addr, span);
  }
  // In pieces: each munmap holds the process's mmap lock (for reading while it drops the
  // pages), and every other thread's mmap, munmap and mprotect waits for it; a piece keeps
  // that wait to a few milliseconds.
  void Unmap() {
    constexpr size_t kPiece = size_t{64} << 20;
    std::lock_guard<std::mutex> lock(mu);
    if (addr == nullptr) return;
    for (size_t end = span; end > 0;) {
      const size_t start = end > kPiece ? end - kPiece : 0;
      munmap(addr + start, end - start);
      end = start;
    }
    addr = nullptr;
  }
};

using RetiredRef = std::shared_ptr<Retired>;

void FinalizeRetired(Napi::Env /*env*/, RetiredRef* retired) { delete retired; }

// Moves the page tables of the whole range to a fresh address with one
// mremap(MREMAP_DONTUNMAP | MREMAP_FIXED), region->mu held: the range keeps its mapping (the
// same file, the same sharing) with no page mapped, and the moved tables map the same pages at
// the answered address. The new address is congruent to the old modulo 2 MiB, so the kernel
// moves whole page-table pages: microseconds, whatever was touched. Answers null (errno set)
// when the kernel cannot (before Linux 5.13, or a range split into several kernel mappings);
// the range is then as it was.
static uint8_t* MovePageTablesAside(Region* region) {
  constexpr size_t kAlign = size_t{2} << 20;
  const size_t reserve = region->span + kAlign;
  void* placeholder = mmap(nullptr, reserve, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (placeholder == MAP_FAILED) return nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(placeholder);
  uintptr_t want = (base + kAlign - 1) / kAlign * kAlign +
                   reinterpret_cast<uintptr_t>(region->addr) % kAlign;
  if (want >= base + kAlign) want -= kAlign;
  void* moved = mremap(region->addr, region->span, region->span,
                       MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
                       reinterpret_cast<void*>(want));
  if (moved == MAP_FAILED) {
    const int err = errno;
    munmap(placeholder, reserve);
    errno = err;
    return nullptr;
  }
  // The placeholder's ends around the moved range (never touched: nothing to drop).
  if (want > base) munmap(placeholder, want - base);
  const uintptr_t end = want + region->span;
  if (base + reserve > end) munmap(reinterpret_cast<void*>(end), base + reserve - end);
  return static_cast<uint8_t*>(moved);
}

// remap(owner, fd, offset, shared, deferUnmap) -> ['remapped' | 'lost', retired | null]
// Replaces the file pages of a live range in one mmap(MAP_FIXED) call with a mapping of `fd` at
// `offset` — MAP_SHARED or MAP_PRIVATE — at the same address and span, so every buffer over the
// range (in any thread) keeps its pointer and sees the new mapping. The caller checked that `fd`
// is the mapped file and long enough. A private range's copy-on-write copies are dropped. The
// kernel checks the fd's access mode before it touches the old mapping, so the usual failures
// (EACCES, EPERM) leave the range as it was and throw. Should a failure leave the range unmapped
// (the kernel ran out of memory halfway), the range is filled with anonymous zero pages, as by a
// revoke, so no view can fault, and 'lost' is answered: the owner must close the mapping.
//
// With `deferUnmap`, the old mapping's page tables are first moved aside (MovePageTablesAside),
// so the mmap replaces a mapping with nothing mapped and costs the same whatever was touched;
// `retired` is then a handle to the moved tables, for unmapRetired (or the GC) to unmap later.
// Where the kernel cannot move them, the remap is done as without `deferUnmap` and `retired`
// is null.
Napi::Value Remap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* region = OpenRegion(info);
  const int fd = info[1].As<Napi::Number>().Int32Value();
  const int64_t offset = ArgInt(info, 2);
  const bool shared = info[3].ToBoolean();
  const bool defer_unmap = info.Length() > 4 && info[4].ToBoolean();
  int err = 0;
  bool lost = false;
  RetiredRef retired;
  {
    std::lock_guard<std::mutex> lock(region->mu);
    uint8_t* aside = defer_unmap ? MovePageTablesAside(region) : nullptr;
    if (aside != nullptr) {
      retired = std::make_shared<Retired>();
      retired->addr = aside;
      retired->span = region->span;
    }
    err = MapFixedOrRevoke(region, 0, region->span, shared ? MAP_SHARED : MAP_PRIVATE, fd, offset,
                           &lost);
  }
  if (err != 0 && retired) {
    retired->Unmap();  // a rare failure: its cost is not worth deferring
    retired.reset();
  }
  if (lost) {
    Napi::Array result = Napi::Array::New(env, 2);
    result.Set(0u, Napi::String::New(env, "lost"));
    result.Set(1u, env.Null());
    return result;
  }
  if (err != 0) ThrowErrno(env, "mmap", err);
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::String::New(env, "remapped"));
  if (retired) {
    result.Set(1u, Napi::External<RetiredRef>::New(env, new RetiredRef(retired), FinalizeRetired));
  } else {
    result.Set(1u, env.Null());
  }
  return result;
}

// Unmaps a retired range on a libuv worker thread.
class UnmapRetiredWorker : public Napi::AsyncWorker {
 public:
  UnmapRetiredWorker(Napi::Env env, RetiredRef retired)
      : Napi::AsyncWorker(env, "handoff_shm.unmapRetired"),
        retired_(std::move(retired)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { retired_->Unmap(); }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  RetiredRef retired_;
  Napi::Promise::Deferred deferred_;
};

// unmapRetired(retired) -> Promise<void>: unmaps what a remap moved aside, off the JS thread.
// Unmapping twice does nothing.
Napi::Value UnmapRetired(const Napi::CallbackInfo& info) {
  RetiredRef retired = *info[0].As<Napi::External<RetiredRef>>().Data();
  auto* worker = new UnmapRetiredWorker(info.Env(), std::move(retired));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// retiredAddress(retired) -> bigint address of the moved range, or null once unmapped.
Napi::Value RetiredAddress(const Napi::CallbackInfo& info) {
  RetiredRef retired = *info[0].As<Napi::External<RetiredRef>>().Data();
  std::lock_guard<std::mutex> lock(retired->mu);
  if (retired->addr == nullptr) return info.Env().Null();
  return Napi::BigInt::New(info.Env(),
                           static_cast<uint64_t>(reinterpret_cast<uintptr_t>(retired->addr)));
}

// overlay(owner, fd, offset, length, fileOffset) -> 'overlaid' | 'lost'
// Maps [fileOffset, fileOffset + length) of `fd` MAP_PRIVATE (copy-on-write, read-write) over
// [offset, offset + length) of a live range with one mmap(MAP_FIXED), so every buffer over the
// range keeps its pointer and sees the file's pages there from now on; the rest of the range is
// untouched. The caller checked the bounds, page alignment and that the file covers the range.
// Copy-on-write copies made in that part of the range before are dropped. A failure that left
// the part unmapped fills the whole range with anonymous zero pages (as a revoke) and answers
// 'lost': the owner must close the mapping.
Napi::Value Overlay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* region = OpenRegion(info);
  const int fd = info[1].As<Napi::Number>().Int32Value();
  const size_t offset = static_cast<size_t>(ArgInt(info, 2));
  const size_t length = RoundUpToPage(static_cast<size_t>(ArgInt(info, 3)));
  const int64_t file_offset = ArgInt(info, 4);
  int err = 0;
  bool lost = false;
  {
    std::lock_guard<std::mutex> lock(region->mu);
    err = offset + length > region->span
              ? EINVAL
              : MapFixedOrRevoke(region, offset, length, MAP_PRIVATE, fd, file_offset, &lost);
  }
  if (lost) return Napi::String::New(env, "lost");
  if (err != 0) ThrowErrno(env, "mmap", err);
  return Napi::String::New(env, "overlaid");
}

// overlayMany(owner, fd, ranges) -> [done, errno, lost]
// Overlay() for many ranges of one file, each at the same offset in the file as in the range:
// `ranges` is a Float64Array of [offset, length] pairs (checked by the caller). Stops at the
// first failure: `done` ranges were overlaid, `errno` says why the next one failed (0: all
// done), `lost` as for Overlay (the whole range then reads zero pages).
Napi::Value OverlayMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* region = OpenRegion(info);
  const int fd = info[1].As<Napi::Number>().Int32Value();
  Napi::Float64Array ranges = info[2].As<Napi::Float64Array>();
  const size_t pairs = ranges.ElementLength() / 2;
  size_t done = 0;
  int err = 0;
  bool lost = false;
  {
    std::lock_guard<std::mutex> lock(region->mu);
    for (; done < pairs; done++) {
      const size_t offset = static_cast<size_t>(ranges[2 * done]);
      const size_t length = RoundUpToPage(static_cast<size_t>(ranges[2 * done + 1]));
      if (offset + length > region->span) {
        err = EINVAL;
        break;
      }
      err = MapFixedOrRevoke(region, offset, length, MAP_PRIVATE, fd,
                             static_cast<int64_t>(offset), &lost);
      if (err != 0) break;
    }
  }
  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Napi::Number::New(env, static_cast<double>(done)));
  result.Set(1u, Napi::Number::New(env, err));
  result.Set(2u, Napi::Boolean::New(env, lost));
  return result;
}

// madvise(owner, offset, length, advice)
Napi::Value Madvise(const Napi::CallbackInfo& info) {
  Region* region = OpenRegion(info);
  const size_t offset = static_cast<size_t>(ArgInt(info, 1));
  const size_t length = static_cast<size_t>(ArgInt(info, 2));
  const int advice = info[3].As<Napi::Number>().Int32Value();
  if (madvise(region->addr + offset, length, advice) != 0) ThrowErrno(info.Env(), "madvise", errno);
  return info.Env().Undefined();
}

// msync(owner, offset, length, flags)
Napi::Value Msync(const Napi::CallbackInfo& info) {
  Region* region = OpenRegion(info);
  const size_t offset = static_cast<size_t>(ArgInt(info, 1));
  const size_t length = static_cast<size_t>(ArgInt(info, 2));
  const int flags = info[3].As<Napi::Number>().Int32Value();
  if (msync(region->addr + offset, length, flags) != 0) ThrowErrno(info.Env(), "msync", errno);
  return info.Env().Undefined();
}

// mincore(owner, offset, length, out?: Uint8Array) -> resident page count. `out` (one byte per page,
// normalised to 0/1) must hold at least ceil(length / page) bytes; the caller checks.
Napi::Value Mincore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* region = OpenRegion(info);
  const size_t offset = static_cast<size_t>(ArgInt(info, 1));
  const size_t length = static_cast<size_t>(ArgInt(info, 2));
  const size_t pages = RoundUpToPage(length) / PageSize();
  std::vector<unsigned char> scratch;
  unsigned char* vec = nullptr;
  if (info.Length() > 3 && info[3].IsTypedArray()) {
    vec = info[3].As<Napi::Uint8Array>().Data();
  } else {
    scratch.resize(pages);
    vec = scratch.data();
  }
  if (mincore(region->addr + offset, length, vec) != 0) ThrowErrno(env, "mincore", errno);
  double resident = 0;
  for (size_t i = 0; i < pages; i++) {
    vec[i] &= 1;
    resident += vec[i];
  }
  return Napi::Number::New(env, resident);
}

// memfdCreate(name, flags) -> fd
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const unsigned int flags = info[1].As<Napi::Number>().Uint32Value();
  const int fd = memfd_create(name.c_str(), flags);
  if (fd < 0) ThrowErrno(info.Env(), "memfd_create", errno);
  return Napi::Number::New(info.Env(), fd);
}

// fallocate(fd, mode, offset, length)
Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const int mode = info[1].As<Napi::Number>().Int32Value();
  const off_t offset = static_cast<off_t>(ArgInt(info, 2));
  const off_t length = static_cast<off_t>(ArgInt(info, 3));
  int rc;
  do {
    rc = fallocate(fd, mode, offset, length);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) ThrowErrno(info.Env(), "fallocate", errno);
  return info.Env().Undefined();
}

// Starts the write-back of a file range on a libuv worker thread.
class WritebackWorker : public Napi::AsyncWorker {
 public:
  WritebackWorker(Napi::Env env, int fd, off_t offset, off_t length)
      : Napi::AsyncWorker(env, "handoff_shm.startWriteback"),
        fd_(fd),
        offset_(offset),
        length_(length),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    int rc;
    do {
      rc = sync_file_range(fd_, offset_, length_, SYNC_FILE_RANGE_WRITE);
    } while (rc != 0 && errno == EINTR);
    errno_ = rc == 0 ? 0 : errno;
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), errno_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  int fd_;
  off_t offset_;
  off_t length_;
  int errno_ = 0;
  Napi::Promise::Deferred deferred_;
};

// startWriteback(fd, offset, length) -> Promise<errno>: sync_file_range(SYNC_FILE_RANGE_WRITE)
// of [offset, offset + length) off the JS thread: the range's dirty pages are queued for
// writing, nothing is waited for (0, or the errno of a refusal).
Napi::Value StartWriteback(const Napi::CallbackInfo& info) {
  const int fd = info[0].As<Napi::Number>().Int32Value();
  auto* worker = new WritebackWorker(info.Env(), fd, static_cast<off_t>(ArgInt(info, 1)),
                                     static_cast<off_t>(ArgInt(info, 2)));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// addSeals(fd, seals)
Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const int seals = info[1].As<Napi::Number>().Int32Value();
  if (fcntl(fd, F_ADD_SEALS, seals) != 0) ThrowErrno(info.Env(), "fcntl(F_ADD_SEALS)", errno);
  return info.Env().Undefined();
}

// getSeals(fd) -> seal bits
Napi::Value GetSeals(const Napi::CallbackInfo& info) {
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) ThrowErrno(info.Env(), "fcntl(F_GET_SEALS)", errno);
  return Napi::Number::New(info.Env(), seals);
}

// dataRanges(fd, offset, length) -> Float64Array of [start, end) pairs: the parts of
// [offset, offset + length) that may hold data, by lseek(SEEK_DATA / SEEK_HOLE). Everything
// outside them is a hole and reads as zero. A file system without hole tracking reports the whole
// file as data. The fd's file offset moves (use a dedicated fd, or none that reads sequentially).
Napi::Value DataRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const off_t offset = static_cast<off_t>(ArgInt(info, 1));
  const off_t end = offset + static_cast<off_t>(ArgInt(info, 2));
  std::vector<double> out;
  off_t pos = offset;
  while (pos < end) {
    const off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data at or after pos
      ThrowErrno(env, "lseek(SEEK_DATA)", errno);
    }
    if (data >= end) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) ThrowErrno(env, "lseek(SEEK_HOLE)", errno);
    if (hole > end) hole = end;
    out.push_back(static_cast<double>(data));
    out.push_back(static_cast<double>(hole));
    pos = hole;
  }
  Napi::Float64Array result = Napi::Float64Array::New(env, out.size());
  if (!out.empty()) std::memcpy(result.Data(), out.data(), out.size() * sizeof(double));
  return result;
}

// ---- cross-process words -------------------------------------------------------------------------

v8::Local<v8::Value> ToV8(napi_value value) {
  v8::Local<v8::Value> result;
  std::memcpy(static_cast<void*>(&result), static_cast<const void*>(&value), sizeof(result));
  return result;
}

// The int32 at byte `info[1]` of the ArrayBuffer or SharedArrayBuffer `info[0]`. `keep` receives
// the backing store, which keeps the memory alive for as long as the caller holds it (a blocking
// wait holds it across the syscall). The caller (futex.ts) has checked the type, alignment and
// bounds; they are checked again here because a bad pointer would not be an exception but a crash.
int32_t* WordOf(Napi::Env env, napi_value buffer, int64_t offset,
               std::shared_ptr<v8::BackingStore>* keep) {
  v8::Local<v8::Value> value = ToV8(buffer);
  if (value->IsSharedArrayBuffer()) {
    *keep = value.As<v8::SharedArrayBuffer>()->GetBackingStore();
  } else if (value->IsArrayBuffer()) {
    *keep = value.As<v8::ArrayBuffer>()->GetBackingStore();
  } else {
    throw Napi::TypeError::New(env, "expected an ArrayBuffer or SharedArrayBuffer");
  }
  const size_t length = (*keep)->ByteLength();
  uint8_t* data = static_cast<uint8_t*>((*keep)->Data());
  if (offset < 0 || offset % 4 != 0 || static_cast<uint64_t>(offset) + 4 > length ||
      data == nullptr || reinterpret_cast<uintptr_t>(data) % 4 != 0) {
    throw Napi::RangeError::New(env, "word offset outside the buffer or unaligned");
  }
  return reinterpret_cast<int32_t*>(data + offset);
}

int32_t* WordAt(const Napi::CallbackInfo& info, std::shared_ptr<v8::BackingStore>* keep) {
  return WordOf(info.Env(), info[0], ArgInt(info, 1), keep);
}

timespec Now() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now;
}

// a - b, or {0, 0} if b is not before a.
timespec Remaining(const timespec& a, const timespec& b) {
  timespec r{a.tv_sec - b.tv_sec, a.tv_nsec - b.tv_nsec};
  if (r.tv_nsec < 0) {
    r.tv_sec -= 1;
    r.tv_nsec += 1000000000L;
  }
  if (r.tv_sec < 0) return timespec{0, 0};
  return r;
}

// futexWait(buffer, offset, expected, timeoutMs) -> 'woken' | 'not-equal' | 'timed-out'.
// Blocks the calling thread in FUTEX_WAIT (shared, so a FUTEX_WAKE from any process that maps the
// same file page wakes it) while the word equals `expected`, for at most timeoutMs (finite, >= 0,
// checked by the caller; measured on CLOCK_MONOTONIC). EINTR is retried with the time left.
// 'woken' also covers spurious wake-ups: callers re-check the word. Other errnos are thrown.
Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<v8::BackingStore> keep;
  int32_t* word = WordAt(info, &keep);
  const int32_t expected = info[2].As<Napi::Number>().Int32Value();
  const double timeout_ms = info[3].As<Napi::Number>().DoubleValue();
  const double whole_s = std::floor(timeout_ms / 1000);
  timespec left{static_cast<time_t>(whole_s),
                static_cast<long>(std::llround((timeout_ms - whole_s * 1000) * 1e6))};
  if (left.tv_nsec >= 1000000000L) {
    left.tv_sec += 1;
    left.tv_nsec -= 1000000000L;
  }
  const timespec start = Now();
  timespec deadline{start.tv_sec + left.tv_sec, start.tv_nsec + left.tv_nsec};
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  for (;;) {
    const long rc = syscall(SYS_futex, word, FUTEX_WAIT, expected, &left, nullptr, 0);
    if (rc == 0) return Napi::String::New(env, "woken");
    const int err = errno;
    if (err == EAGAIN) return Napi::String::New(env, "not-equal");
    if (err == ETIMEDOUT) return Napi::String::New(env, "timed-out");
    if (err != EINTR) ThrowErrno(env, "futex(FUTEX_WAIT)", err);
    left = Remaining(deadline, Now());
    if (left.tv_sec == 0 && left.tv_nsec == 0) return Napi::String::New(env, "timed-out");
  }
}

// futexWake(buffer, offset, count) -> number of waiters woken (0..count), in any process.
// `count` is in [1, INT_MAX] (checked by the caller).
Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  std::shared_ptr<v8::BackingStore> keep;
  int32_t* word = WordAt(info, &keep);
  const int count = info[2].As<Napi::Number>().Int32Value();
  const long rc = syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
  if (rc < 0) ThrowErrno(info.Env(), "futex(FUTEX_WAKE)", errno);
  return Napi::Number::New(info.Env(), static_cast<double>(rc));
}

// futexWaitAny(buffers, offsets, expected, timeoutMs) -> index woken (>= 0), -1 (a word did not
// hold its expected value: EAGAIN) or -2 (timed out). futex_waitv(2) (Linux 5.16+) over up to
// FUTEX_WAITV_MAX shared (not _PRIVATE) 32-bit words: a FUTEX_WAKE on any of them, from any
// process that maps the same page, ends the wait. The arrays have the same length in
// [1, FUTEX_WAITV_MAX] and the timeout is finite and >= 0 (checked by the caller); the deadline is
// absolute on CLOCK_MONOTONIC, so EINTR simply retries. ENOSYS (an older kernel) is thrown.
Napi::Value FutexWaitAny(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array buffers = info[0].As<Napi::Array>();
  Napi::Array offsets = info[1].As<Napi::Array>();
  Napi::Array expected = info[2].As<Napi::Array>();
  const uint32_t n = buffers.Length();
  if (n == 0 || n > FUTEX_WAITV_MAX || offsets.Length() != n || expected.Length() != n) {
    throw Napi::RangeError::New(env, "futexWaitAny: 1 to FUTEX_WAITV_MAX words, arrays alike");
  }
  std::vector<std::shared_ptr<v8::BackingStore>> keep(n);
  std::vector<futex_waitv> waiters(n);
  for (uint32_t k = 0; k < n; k++) {
    Napi::Value buffer = buffers[k];
    const int64_t offset = offsets.Get(k).As<Napi::Number>().Int64Value();
    int32_t* word = WordOf(env, buffer, offset, &keep[k]);
    waiters[k] = futex_waitv{};
    waiters[k].val = static_cast<uint32_t>(expected.Get(k).As<Napi::Number>().Int32Value());
    waiters[k].uaddr = reinterpret_cast<uintptr_t>(word);
    waiters[k].flags = FUTEX_32;
  }
  const double timeout_ms = info[3].As<Napi::Number>().DoubleValue();
  const double whole_s = std::floor(timeout_ms / 1000);
  timespec deadline = Now();
  deadline.tv_sec += static_cast<time_t>(whole_s);
  deadline.tv_nsec += static_cast<long>(std::llround((timeout_ms - whole_s * 1000) * 1e6));
  while (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  for (;;) {
    const long rc =
        syscall(SYS_futex_waitv, waiters.data(), n, 0, &deadline, CLOCK_MONOTONIC);
    if (rc >= 0) return Napi::Number::New(env, static_cast<double>(rc));
    const int err = errno;
    if (err == EAGAIN) return Napi::Number::New(env, -1);
    if (err == ETIMEDOUT) return Napi::Number::New(env, -2);
    if (err != EINTR) ThrowErrno(env, "futex_waitv", err);
  }
}

// atomicLoad32(buffer, offset) -> int32, sequentially consistent.
Napi::Value AtomicLoad32(const Napi::CallbackInfo& info) {
  std::shared_ptr<v8::BackingStore> keep;
  int32_t* word = WordAt(info, &keep);
  return Napi::Number::New(info.Env(), __atomic_load_n(word, __ATOMIC_SEQ_CST));
}

// atomicStore32(buffer, offset, value), sequentially consistent. `value` is taken modulo 2^32.
Napi::Value AtomicStore32(const Napi::CallbackInfo& info) {
  std::shared_ptr<v8::BackingStore> keep;
  int32_t* word = WordAt(info, &keep);
  __atomic_store_n(word, info[2].As<Napi::Number>().Int32Value(), __ATOMIC_SEQ_CST);
  return info.Env().Undefined();
}

// atomicCompareExchange32(buffer, offset, expected, desired) -> the old value (int32). Stores
// `desired` only if the word equals `expected`; sequentially consistent either way.
Napi::Value AtomicCompareExchange32(const Napi::CallbackInfo& info) {
  std::shared_ptr<v8::BackingStore> keep;
  int32_t* word = WordAt(info, &keep);
  int32_t old = info[2].As<Napi::Number>().Int32Value();
  const int32_t desired = info[3].As<Napi::Number>().Int32Value();
  __atomic_compare_exchange_n(word, &old, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return Napi::Number::New(info.Env(), old);  // on failure, old holds the value found
}

// ---- blocking unix sockets -----------------------------------------------------------------------

// Sets SO_RCVTIMEO and SO_SNDTIMEO to timeoutMs (> 0, checked by the caller), rounded up to whole
// microseconds so that it never becomes 0 (which would mean "no timeout"). Returns 0 or the errno;
// `*failed` names the option that failed.
int SetTimeouts(int fd, double timeout_ms, const char** failed) {
  const double us = std::ceil(timeout_ms * 1000);
  timeval tv{static_cast<time_t>(us / 1e6), static_cast<suseconds_t>(std::fmod(us, 1e6))};
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
    *failed = "setsockopt(SO_RCVTIMEO)";
    return errno;
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
    *failed = "setsockopt(SO_SNDTIMEO)";
    return errno;
  }
  return 0;
}

// connectUnix(path, timeoutMs) -> fd. A blocking AF_UNIX SOCK_STREAM socket (close-on-exec) with
// both timeouts set, connected to `path` (shorter than sun_path, no NUL: checked by the caller).
// The send timeout also bounds connect() itself (a full listen backlog fails with EAGAIN). EINTR
// is retried (an interrupted AF_UNIX connect leaves the socket unconnected). On failure the socket
// is closed and the errno thrown; on success the caller owns the fd.
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const double timeout_ms = info[1].As<Napi::Number>().DoubleValue();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) ThrowErrno(env, "connect", ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.data(), path.size());

  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "socket", errno);
  const char* failed = "connect";
  int err = SetTimeouts(fd, timeout_ms, &failed);
  if (err == 0) {
    int rc;
    do {
      rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) err = errno;
  }
  if (err != 0) {
    close(fd);
    ThrowErrno(env, failed, err);
  }
  return Napi::Number::New(env, fd);
}

// setSocketTimeout(fd, timeoutMs): SO_RCVTIMEO and SO_SNDTIMEO, as in connectUnix.
Napi::Value SetSocketTimeout(const Napi::CallbackInfo& info) {
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const char* failed = nullptr;
  const int err = SetTimeouts(fd, info[1].As<Napi::Number>().DoubleValue(), &failed);
  if (err != 0) ThrowErrno(info.Env(), failed, err);
  return info.Env().Undefined();
}

// peerCredentials(fd) -> [pid, uid, gid]: the credentials the kernel recorded for the process at
// the other end of a connected AF_UNIX socket when it connected (getsockopt SO_PEERCRED). pid is
// 0 when that process lives in a pid namespace this process cannot see.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = info[0].As<Napi::Number>().Int32Value();
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    ThrowErrno(env, "getsockopt(SO_PEERCRED)", errno);
  }
  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Napi::Number::New(env, static_cast<double>(cred.pid)));
  result.Set(1u, Napi::Number::New(env, static_cast<double>(cred.uid)));
  result.Set(2u, Napi::Number::New(env, static_cast<double>(cred.gid)));
  return result;
}

// stats() -> { regions, bytes }: address ranges this process still has mapped through the addon.
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("regions", Napi::Number::New(info.Env(), static_cast<double>(g_regions.load())));
  result.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(g_bytes.load())));
  return result;
}

Napi::Object Constants(Napi::Env env) {
  Napi::Object advice = Napi::Object::New(env);
  advice.Set("normal", MADV_NORMAL);
  advice.Set("random", MADV_RANDOM);
  advice.Set("sequential", MADV_SEQUENTIAL);
  advice.Set("willneed", MADV_WILLNEED);
  advice.Set("dontneed", MADV_DONTNEED);
#ifdef MADV_FREE
  advice.Set("free", MADV_FREE);
#endif
  advice.Set("remove", MADV_REMOVE);
  advice.Set("dontfork", MADV_DONTFORK);
  advice.Set("dofork", MADV_DOFORK);
  advice.Set("hugepage", MADV_HUGEPAGE);
  advice.Set("nohugepage", MADV_NOHUGEPAGE);
  advice.Set("dontdump", MADV_DONTDUMP);
  advice.Set("dodump", MADV_DODUMP);
#ifdef MADV_COLD
  advice.Set("cold", MADV_COLD);
#endif
#ifdef MADV_PAGEOUT
  advice.Set("pageout", MADV_PAGEOUT);
#endif
#ifdef MADV_POPULATE_READ
  advice.Set("populate-read", MADV_POPULATE_READ);
#endif
#ifdef MADV_POPULATE_WRITE
  advice.Set("populate-write", MADV_POPULATE_WRITE);
#endif

  Napi::Object seals = Napi::Object::New(env);
  seals.Set("seal", F_SEAL_SEAL);
  seals.Set("shrink", F_SEAL_SHRINK);
  seals.Set("grow", F_SEAL_GROW);
  seals.Set("write", F_SEAL_WRITE);
#ifdef F_SEAL_FUTURE_WRITE
  seals.Set("future-write", F_SEAL_FUTURE_WRITE);
#endif

  Napi::Object flags = Napi::Object::New(env);
  flags.Set("MS_SYNC", MS_SYNC);
  flags.Set("MS_ASYNC", MS_ASYNC);
  flags.Set("MS_INVALIDATE", MS_INVALIDATE);
  flags.Set("MFD_CLOEXEC", MFD_CLOEXEC);
  flags.Set("MFD_ALLOW_SEALING", MFD_ALLOW_SEALING);
  flags.Set("FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  flags.Set("FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);

  Napi::Object constants = Napi::Object::New(env);
  constants.Set("pageSize", Napi::Number::New(env, static_cast<double>(PageSize())));
  // Longest socket path connectUnix accepts, in bytes (sun_path minus its terminating NUL).
  constants.Set("unixPathMax",
                Napi::Number::New(env, static_cast<double>(sizeof(sockaddr_un::sun_path) - 1)));
  constants.Set("advice", advice);
  constants.Set("seals", seals);
  constants.Set("flags", flags);
  return constants;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("constants", Constants(env));
  exports.Set("map", Napi::Function::New(env, Map, "map"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("remap", Napi::Function::New(env, Remap, "remap"));
  exports.Set("unmapRetired", Napi::Function::New(env, UnmapRetired, "unmapRetired"));
  exports.Set("retiredAddress", Napi::Function::New(env, RetiredAddress, "retiredAddress"));
  exports.Set("overlay", Napi::Function::New(env, Overlay, "overlay"));
  exports.Set("overlayMany", Napi::Function::New(env, OverlayMany, "overlayMany"));
  exports.Set("madvise", Napi::Function::New(env, Madvise, "madvise"));
  exports.Set("msync", Napi::Function::New(env, Msync, "msync"));
  exports.Set("mincore", Napi::Function::New(env, Mincore, "mincore"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("startWriteback", Napi::Function::New(env, StartWriteback, "startWriteback"));
  exports.Set("addSeals", Napi::Function::New(env, AddSeals, "addSeals"));
  exports.Set("getSeals", Napi::Function::New(env, GetSeals, "getSeals"));
  exports.Set("dataRanges", Napi::Function::New(env, DataRanges, "dataRanges"));
  exports.Set("stats", Napi::Function::New(env, Stats, "stats"));
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
  exports.Set("futexWaitAny", Napi::Function::New(env, FutexWaitAny, "futexWaitAny"));
  exports.Set("atomicLoad32", Napi::Function::New(env, AtomicLoad32, "atomicLoad32"));
  exports.Set("atomicStore32", Napi::Function::New(env, AtomicStore32, "atomicStore32"));
  exports.Set("atomicCompareExchange32",
              Napi::Function::New(env, AtomicCompareExchange32, "atomicCompareExchange32"));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix, "connectUnix"));
  exports.Set("setSocketTimeout", Napi::Function::New(env, SetSocketTimeout, "setSocketTimeout"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  return exports;
}

}  // namespace

NODE_API_MODULE(handoff_shm, Init)
