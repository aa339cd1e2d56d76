#!/usr/bin/env escript
%%! -noshell
%% ./ktls demo: three nodes with -proto_dist ktls_filter on 127.0.0.1,
%% speaking TLS (mutual authentication, a throwaway CA made by demo.sh).
%% Shows which record layer carries TLS (the kernel's kTLS or OpenSSL in user
%% space, and why), traffic flowing over the carrier, a stock inet_tls_dist
%% node joining, attacks from the ElixirConf 2023 dist-filtering talk being
%% dropped by the default policy, and statistics.
-mode(compile).

main([Ebin, BenchEbin, TlsConf | _]) ->
    true = code:add_patha(Ebin),
    Cookie = "ktls_demo_" ++ integer_to_list(erlang:unique_integer([positive])),
    Start = fun(Name) ->
                    {ok, P, N} = peer:start_link(
                                   #{name => Name ++ "_" ++ os:getpid(), host => "127.0.0.1",
                                     longnames => true, connection => standard_io,
                                     %% the bench's traffic generators spawn
                                     %% ktls_bench funs: allowed on purpose
                                     args => ["-pa", Ebin, "-pa", BenchEbin, "-proto_dist", "ktls_filter",
                                              "-ktls_filter_optfile", TlsConf,
                                              "-setcookie", Cookie,
                                              "-ktls_filter", "allow_mfa", "[{ktls_bench,'_','_'}]"]}),
                    {P, N}
            end,
    say("starting 3 nodes with -proto_dist ktls_filter -ktls_filter_optfile ~ts", [TlsConf]),
    [{A, NA}, {B, NB}, {C, NC}] = [Start(N) || N <- ["alpha", "beta", "gamma"]],
    Call = fun(P, M, F, Args) -> peer:call(P, M, F, Args, 60000) end,
    pong = Call(A, net_adm, ping, [NB]),
    pong = Call(A, net_adm, ping, [NC]),
    pong = Call(B, net_adm, ping, [NC]),
    say("~p sees ~p", [NA, Call(A, erlang, nodes, [])]),
    [#{tls := Tls} | _] = Call(A, ktls_filter, connections, []),
    say("TLS: ~p, ~s, peer ~s", [maps:get(protocol, Tls), maps:get(cipher, Tls),
                                 maps:get(peer_subject, Tls)]),
    case Tls of
        #{kernel_tx := true, kernel_rx := true} ->
            say("  record layer: in the kernel (kTLS), both directions");
        #{kernel_fallback := Why} ->
            say("  record layer: OpenSSL in user space on the carrier's buffers (no kTLS: ~ts)",
                [Why])
    end,

    say("traffic from ~p to ~p:", [NA, NB]),
    {Msgs, MsgUs} = Call(A, ktls_bench, small, [NB, 4, 50000]),
    say("  ~p small messages from 4 senders: ~p msgs/s", [Msgs, round(Msgs / MsgUs * 1.0e6)]),
    {Bytes, BytesUs} = Call(A, ktls_bench, bulk, [NB, 1024 * 1024, 256]),
    say("  256 MiB in 1 MiB binaries: ~p MB/s", [round(Bytes / BytesUs)]),
    Rtts = Call(A, ktls_bench, pingpong, [NB, 1000]),
    say("  ping-pong p50: ~p us", [lists:nth(500, Rtts)]),
    NB = Call(A, erpc, call, [NB, erlang, node, []]),

    say("a stock node (-proto_dist inet_tls, same options file) joins:"),
    {ok, D, ND} = peer:start_link(#{name => "delta_" ++ os:getpid(), host => "127.0.0.1",
                                    longnames => true, connection => standard_io,
                                    args => ["-proto_dist", "inet_tls", "-ssl_dist_optfile",
                                             TlsConf, "-setcookie", Cookie]}),
    pong = Call(D, net_adm, ping, [NA]),
    #{tls := DTls} = Call(A, ktls_filter, channel_inspect, [ND]),
    say("  ~p <-> ~p: ~p, ~s; ~p sees ~p", [ND, NA, maps:get(protocol, DTls),
                                          maps:get(cipher, DTls), ND, Call(D, erlang, nodes, [])]),
    peer:stop(D),

    say("attacks from ~p on ~p (default policy, no allow list for them):", [NA, NB]),
    %% Each runs on alpha: peer:call(A, M, F, Args).
    Try = fun(What, M, F, Args) ->
                  R = case Call(A, M, F, Args) of
                          _ when F =:= send -> sent;
                          Answer -> Answer
                      end,
                  say("  ~-48s -> ~0tp", [What, R])
          end,
    Marker = "/tmp/ktls_demo_pwned_" ++ os:getpid(),
    Touch = "touch " ++ Marker,
    %% rpc:call (erpc underneath) answers {badrpc, _} instead of raising
    Try("rpc:call(Node, erlang, halt, [1])", rpc, call, [NB, erlang, halt, [1], 5000]),
    Try("rpc:call(Node, os, cmd, [\"touch ...\"])", rpc, call, [NB, os, cmd, [Touch], 5000]),
    Try("{rex, Node} ! {'$gen_cast', {cast, os, cmd, ...}}", erlang, send,
        [{rex, NB}, {'$gen_cast', {cast, os, cmd, [Touch], self()}}]),
    Try("{standard_error, Node} ! {io_request, .., MFA}", erlang, send,
        [{standard_error, NB}, {io_request, self(), make_ref(), {put_chars, unicode, os, cmd, [Touch]}}]),
    timer:sleep(500),
    say("  ~p still up: ~p; attacker code ran: ~p",
        [NB, Call(A, net_adm, ping, [NB]) =:= pong, filelib:is_file(Marker)]),
    W = Call(B, ktls_filter, world_stats_get, []),
    say("  filter on ~p: ~p messages seen, ~p kept, ~p dropped, ~p spawn requests refused",
        [NB, maps:get(messages_seen, W), maps:get(messages_kept, W),
         maps:get(messages_dropped, W), maps:get(spawn_requests_refused, W)]),

    say("stats on ~p:", [NB]),
    Stats = Call(B, ktls_filter, carrier_stats, []),
    say("  carrier: ~p", [maps:without([pool], Stats)]),
    [Conn | _] = Call(B, ktls_filter, connections, []),
    say("  a connection: ~p",
        [Conn#{tls := maps:remove(peer_certificate, maps:get(tls, Conn))}]),
    [peer:stop(P) || P <- [A, B, C]],
    say("demo finished"),
    halt(0);
main(_) ->
    io:format("usage: demo.escript EBIN BENCH_EBIN TLS_OPTFILE~n"),
    halt(2).

say(F) -> say(F, []).
say(F, A) -> io:format("[demo] " ++ F ++ "~n", A).
