#!/usr/bin/env escript
%%! -noshell
%% ./ktls demo: three nodes with -proto_dist ktls_filter on 127.0.0.1.
%% Shows traffic flowing over the carrier and the carrier's statistics.
-mode(compile).

main([Ebin, BenchEbin | _]) ->
    true = code:add_patha(Ebin),
    Cookie = "ktls_demo_" ++ integer_to_list(erlang:unique_integer([positive])),
    Start = fun(Name) ->
                    {ok, P, N} = peer:start_link(
                                   #{name => Name ++ "_" ++ os:getpid(), host => "127.0.0.1",
                                     longnames => true, connection => standard_io,
                                     args => ["-pa", Ebin, "-pa", BenchEbin, "-proto_dist", "ktls_filter",
                                              "-setcookie", Cookie]}),
                    {P, N}
            end,
    say("starting 3 nodes with -proto_dist ktls_filter on 127.0.0.1"),
    [{A, NA}, {B, NB}, {C, NC}] = [Start(N) || N <- ["alpha", "beta", "gamma"]],
    Call = fun(P, M, F, Args) -> peer:call(P, M, F, Args, 60000) end,
    pong = Call(A, net_adm, ping, [NB]),
    pong = Call(A, net_adm, ping, [NC]),
    pong = Call(B, net_adm, ping, [NC]),
    say("~p sees ~p", [NA, Call(A, erlang, nodes, [])]),

    say("traffic from ~p to ~p:", [NA, NB]),
    {Msgs, MsgUs} = Call(A, ktls_bench, small, [NB, 4, 50000]),
    say("  ~p small messages from 4 senders: ~p msgs/s", [Msgs, round(Msgs / MsgUs * 1.0e6)]),
    {Bytes, BytesUs} = Call(A, ktls_bench, bulk, [NB, 1024 * 1024, 256]),
    say("  256 MiB in 1 MiB binaries: ~p MB/s", [round(Bytes / BytesUs)]),
    Rtts = Call(A, ktls_bench, pingpong, [NB, 1000]),
    say("  ping-pong p50: ~p us", [lists:nth(500, Rtts)]),
    NB = Call(A, erpc, call, [NB, erlang, node, []]),

    %% The filter engine (nif/filter, issue 4) is not in the tree yet, so the
    %% demo does not launch attacks: nothing would stop them.
    say("attacks: skipped - the filter engine is not built yet, so nothing would drop them"),

    say("stats on ~p:", [NB]),
    Stats = Call(B, ktls_filter, carrier_stats, []),
    say("  carrier: ~p", [Stats]),
    [Conn | _] = Call(B, ktls_filter, connections, []),
    say("  a connection: ~p", [Conn]),
    [peer:stop(P) || P <- [A, B, C]],
    say("demo finished"),
    halt(0);
main(_) ->
    io:format("usage: demo.escript EBIN BENCH_EBIN~n"),
    halt(2).

say(F) -> say(F, []).
say(F, A) -> io:format("[demo] " ++ F ++ "~n", A).
