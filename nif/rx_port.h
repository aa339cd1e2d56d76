// Receive ports: the VM's own pollset wakes the reader of a connection.
//
// A streaming connection in carrier::RxMode::kCaller is read by a port of
// the `ktls_filter_nif` driver (rx_port_driver.cc, in the same shared library
// as the NIF). The port selects the socket itself (lent by the connection,
// carrier::Connection::lend_poll_fd) with driver_select(); when it is
// readable the VM runs the port's ready_input on a scheduler, which calls
// receive() here: the carrier reads, the filter
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
// The socket, lent for driver_select() (ERL_DRV_USE); -1 when the
// connection is already closed. From then on the claim belongs to the
// descriptor: the port no longer release()s it; the driver's stop_select
// hands the descriptor back with fd_out_of_pollset().
int lend_fd(Claim* c);
// The VM took `fd` out of its pollset (stop_select): the connection gets its
// socket back (closing it if the connection is closed) and the claim that
// lent it is released. False if `fd` was not lent by a claim.
bool fd_out_of_pollset(int fd);
// Reads and delivers on the calling scheduler (carrier::Connection::receive_now).
carrier::RxStep receive(Claim* c);
void release(Claim* c);

}  // namespace ktls::nif::rx_port
