// The `ktls_filter_nif` port driver: one port per streaming connection in
// carrier::RxMode::kCaller, opened by the connection's input process (see
// rx_port.h and ktls_filter_dist_ctrl.erl). Commands (erlang:port_control/3):
//   1 attach  <<Token:64>>  -> "ok" | "closed"   claim the connection, select it
//   2 resume  <<>>          -> "ok"              ktls_filter_nif:consumed/2 said resume
#include <erl_driver.h>

#include <cstdint>
#include <cstring>
#include <memory>

#include "nif/rx_port.h"

namespace ktls::nif::rx_port {
namespace {

constexpr unsigned kAttach = 1;
constexpr unsigned kResume = 2;
constexpr unsigned long kRetryMs = 5;  // pool exhausted: as the ring thread's retry

struct Port {
  ErlDrvPort port;
  Claim* claim = nullptr;  // released here, or by stop_select once fd is lent
  int fd = -1;             // the connection's socket, lent (rx_port::lend_fd)
  bool selected = false;   // ERL_DRV_READ is on
};

ErlDrvEvent event(int fd) { return reinterpret_cast<ErlDrvEvent>(static_cast<intptr_t>(fd)); }

void select_read(Port* p, bool on) {
  if (p->fd < 0 || p->selected == on) return;
  driver_select(p->port, event(p->fd), ERL_DRV_READ | (on ? ERL_DRV_USE : 0), on ? 1 : 0);
  p->selected = on;
}

// The connection is gone (or the port): the socket leaves the pollset, and
// stop_select returns it to the connection and releases the claim; a claim
// that never lent its socket is released here.
void finish(Port* p) {
  if (p->fd >= 0) {
    driver_select(p->port, event(p->fd), ERL_DRV_READ | ERL_DRV_USE, 0);
    p->fd = -1;
    p->selected = false;
    p->claim = nullptr;
  }
  if (p->claim) {
    release(p->claim);
    p->claim = nullptr;
  }
}

void step(Port* p) {
  if (!p->claim) return;
  switch (receive(p->claim)) {
    case carrier::RxStep::kAgain:
      select_read(p, true);
      return;
    case carrier::RxStep::kPaused:
      select_read(p, false);  // resumed by kResume
      return;
    case carrier::RxStep::kRetry:
      select_read(p, false);
      driver_set_timer(p->port, kRetryMs);
      return;
    case carrier::RxStep::kClosed:
      finish(p);  // the ring thread reports the close to the processes
      return;
  }
}

ErlDrvSSizeT reply(const char* text, char** rbuf, ErlDrvSizeT rlen) {
  const size_t n = std::strlen(text);
  if (n > rlen) *rbuf = static_cast<char*>(driver_alloc(n));
  std::memcpy(*rbuf, text, n);
  return static_cast<ErlDrvSSizeT>(n);
}

ErlDrvData start(ErlDrvPort port, char*) {
  auto p = std::make_unique<Port>();
  p->port = port;
  return reinterpret_cast<ErlDrvData>(p.release());  // owned by the VM until stop
}

void stop(ErlDrvData d) {
  std::unique_ptr<Port> p(reinterpret_cast<Port*>(d));
  finish(p.get());
}

void ready_input(ErlDrvData d, ErlDrvEvent) { step(reinterpret_cast<Port*>(d)); }

void timeout(ErlDrvData d) { step(reinterpret_cast<Port*>(d)); }

ErlDrvSSizeT control(ErlDrvData d, unsigned int command, char* buf, ErlDrvSizeT len, char** rbuf,
                     ErlDrvSizeT rlen) {
  auto* p = reinterpret_cast<Port*>(d);
  switch (command) {
    case kAttach: {
      if (len != 8 || p->claim) return -1;  // badarg
      uint64_t token = 0;
      for (int i = 0; i < 8; i++) token = token << 8 | static_cast<uint8_t>(buf[i]);
      p->claim = claim(token);
      if (!p->claim) return reply("closed", rbuf, rlen);
      p->fd = lend_fd(p->claim);
      if (p->fd < 0) {
        finish(p);
        return reply("closed", rbuf, rlen);
      }
      step(p);  // bytes that came with the handshake, then select
      return reply("ok", rbuf, rlen);
    }
    case kResume:
      step(p);
      return reply("ok", rbuf, rlen);
    default:
      return -1;
  }
}

// The socket is out of the pollset: back to its connection, which closes it
// if it is closed.
void stop_select(ErlDrvEvent e, void*) {
  fd_out_of_pollset(static_cast<int>(reinterpret_cast<intptr_t>(e)));
}

ErlDrvEntry entry = {
    .init = nullptr,
    .start = start,
    .stop = stop,
    .output = nullptr,
    .ready_input = ready_input,
    .ready_output = nullptr,
    .driver_name = const_cast<char*>("ktls_filter_nif"),
    .finish = nullptr,
    .handle = nullptr,
    .control = control,
    .timeout = timeout,
    .outputv = nullptr,
    .ready_async = nullptr,
    .flush = nullptr,
    .call = nullptr,
    .unused_event_callback = nullptr,
    .extended_marker = static_cast<int>(ERL_DRV_EXTENDED_MARKER),
    .major_version = ERL_DRV_EXTENDED_MAJOR_VERSION,
    .minor_version = ERL_DRV_EXTENDED_MINOR_VERSION,
    .driver_flags = ERL_DRV_FLAG_USE_PORT_LOCKING,
    .handle2 = nullptr,
    .process_exit = nullptr,
    .stop_select = stop_select,
    .emergency_close = nullptr,
};

}  // namespace
}  // namespace ktls::nif::rx_port

extern "C" DRIVER_INIT(ktls_filter_nif) { return &ktls::nif::rx_port::entry; }
