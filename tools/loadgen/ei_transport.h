// erl_interface socket callbacks for the handshake: plain TCP whose timeouts
// use poll(), because ei's own callbacks wait with select(), which cannot
// watch a descriptor above FD_SETSIZE (1024); a swarm of 10,000 connections
// has descriptors far above that. TLS will plug in here (issue 13).
#pragma once

#include <ei.h>

namespace ktls::loadgen {

// Callbacks for ei_connect_xinit_ussi(). The socket context is the
// descriptor itself (no allocation per socket); sockets are blocking, as
// EI_SCLBK_FLG_FULL_IMPL requires between calls, and TCP_NODELAY.
ei_socket_callbacks* plain_tcp_callbacks();

}  // namespace ktls::loadgen
