%% A hand-driven distribution peer for bad-input tests: speaks the OTP 25
%% handshake over gen_tcp (so it can then misbehave on purpose).
-module(ktls_fake_node).

-export([handshake/3]).

-include_lib("kernel/include/dist.hrl").

%% Connects to Port, does the handshake as Name with Cookie; returns the
%% socket in 4-byte framing, passive.
-spec handshake(inet:port_number(), atom(), atom()) -> {ok, gen_tcp:socket()} | {error, term()}.
handshake(Port, Name, Cookie) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {packet, 2}, {active, false}]),
    Flags = ?MANDATORY_DFLAGS_25 bor ?DFLAG_FRAGMENTS bor ?DFLAG_SPAWN bor ?DFLAG_ALIAS
        bor ?DFLAG_DIST_MONITOR bor ?DFLAG_DIST_MONITOR_NAME bor ?DFLAG_UNLINK_ID
        bor ?DFLAG_EXIT_PAYLOAD bor ?DFLAG_SEND_SENDER bor ?DFLAG_PUBLISHED,
    NameBin = atom_to_binary(Name),
    ok = gen_tcp:send(S, <<$N, Flags:64, 1234:32, (byte_size(NameBin)):16, NameBin/binary>>),
    case gen_tcp:recv(S, 0, 5000) of
        {ok, <<"sok">>} ->
            {ok, <<$N, _OtherFlags:64, Challenge:32, _Cr:32, NLen:16, _Other:NLen/binary>>} =
                gen_tcp:recv(S, 0, 5000),
            Digest = erlang:md5([atom_to_list(Cookie) | integer_to_list(Challenge)]),
            ok = gen_tcp:send(S, <<$r, 42:32, Digest/binary>>),
            case gen_tcp:recv(S, 0, 5000) of
                {ok, <<$a, _:16/binary>>} ->
                    ok = inet:setopts(S, [{packet, 4}]),
                    {ok, S};
                Other ->
                    {error, {ack, Other}}
            end;
        Other ->
            {error, {status, Other}}
    end.
