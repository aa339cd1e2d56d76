// Receive ports: the VM's own pollset wakes the reader of a connection.
//
// A streaming connection in carrier::RxMode::kCaller is read by a port of
// the `ktls_filter_nif` driver (rx_port_driver.cc, in the same shared library
// as the NIF). The port selects a duplicate of the socket with
// driver_select(); when it is readable the VM runs the port's ready_input on
// a scheduler, which calls receive() here: the carrier reads, the filter
// decides and the input process gets its {ktls_data, ...} message, all on
// that scheduler. OTP moves a port's busy descriptor into the pollset that a
// sleeping scheduler waits in, so a request/response exchange no longer pays
// a wake-up of the ring thread and then one of a scheduler per message.
//
// This header has no Erlang headers: the driver side includes erl_driver.h,
// the NIF side erl_nif.h, and the two must not meet in one file.
#pragma once

#include <cstdint>

#include "carrier/carrier.h"

namespace ktls::nif::rx_port {

// A connection handed to one port; keeps the connection resource alive.
struct Claim;

// Takes the connection registered under `token` (ktls_filter_nif:start_input
// made it); nullptr if the token is unknown, already claimed or its
// connection closed.
Claim* claim(uint64_t token);
// A duplicate of the socket for driver_select(), owned by the port; -1 when
// the connection is already closed.
int dup_fd(Claim* c);
// Reads and delivers on the calling scheduler (carrier::Connection::receive_now).
carrier::RxStep receive(Claim* c);
void release(Claim* c);

}  // namespace ktls::nif::rx_port
