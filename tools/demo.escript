#!/usr/bin/env escript
%%! -noshell
%% ./ktls demo: three nodes with -proto_dist ktls_filter on 127.0.0.1.
%% Shows traffic flowing, an attack being dropped by the filter, and the stats.
-mode(compile).

main([Ebin | _]) ->
    true = code:add_patha(Ebin),
    Cookie = "ktls_demo_" ++ integer_to_list(erlang:unique_integer([positive])),
    Start = fun(Name) ->
                    {ok, P, N} = peer:start_link(
                                   #{name => Name ++ "_" ++ os:getpid(), host => "127.0.0.1",
                                     longnames => true, connection => standard_io,
                                     args => ["-pa", Ebin, "-proto_dist", "ktls_filter",
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

    say("traffic: 20,000 erpc calls and a 16 MiB binary from ~p to ~p", [NA, NB]),
    T0 = erlang:monotonic_time(microsecond),
    ok = Call(A, erlang, apply, [fun() ->
        [I = erpc:call(NB, erlang, abs, [-I]) || I <- lists:seq(1, 20000)],
        Bin = binary:copy(<<"k">>, 16 * 1024 * 1024),
        Size = byte_size(Bin),
        Size = erpc:call(NB, erlang, byte_size, [Bin]),
        ok
    end, []]),
    Ms = (erlang:monotonic_time(microsecond) - T0) div 1000,
    say("  done in ~p ms", [Ms]),

    say("attack: ~p asks ~p to run erlang:halt() through erpc", [NA, NB]),
    Attack = Call(A, erlang, apply, [fun() ->
        try erpc:call(NB, erlang, halt, [1], 5000)
        catch C1:R1 -> {C1, R1}
        end
    end, []]),
    say("  attacker got: ~p", [Attack]),
    say("  ~p is still up: ~p", [NB, Call(A, net_adm, ping, [NB])]),

    say("attack: {'$gen_cast', {cast, os, cmd, [\"touch /tmp/pwned\"], GL}} to rex on ~p", [NB]),
    ok = Call(A, erlang, apply, [fun() ->
        {rex, NB} ! {'$gen_cast', {cast, os, cmd, ["echo pwned"], group_leader()}}, ok
    end, []]),
    timer:sleep(500),

    say("stats on ~p:", [NB]),
    Stats = Call(B, ktls_filter, carrier_stats, []),
    say("  carrier: ~p", [Stats]),
    World = try Call(B, ktls_filter_nif, world_stats, []) catch _:E -> E end,
    say("  filter: ~p", [World]),
    [peer:stop(P) || P <- [A, B, C]],
    say("demo finished"),
    halt(0);
main(_) ->
    io:format("usage: demo.escript EBIN~n"),
    halt(2).

say(F) -> say(F, []).
say(F, A) -> io:format("[demo] " ++ F ++ "~n", A).
