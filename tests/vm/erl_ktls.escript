#!/usr/bin/env escript
%%! -noshell
%% Erlang-level kTLS cases, run inside the QEMU guest by tests/vm/stage.sh
%% (a kernel with kTLS): real OTP nodes with -proto_dist ktls_filter and
%% TLS options, and a stock -proto_dist inet_tls node against one of them.
%% Asserts that the kernel carries both directions of every ktls_filter
%% connection (no user-space fallback) and that dist traffic is byte-exact.
%%
%% usage: erl_ktls.escript EBIN PKI_DIR
%% PKI_DIR holds node.conf (tools/certs.sh, no versions: TLS 1.3 between
%% ktls_filter nodes, 1.2 with a stock node) and n13.conf (TLS 1.3 only).
%% Prints one "ERL_CASE Name passed|failed Detail" line per case.
-mode(compile).

main([Ebin, Pki]) ->
    true = code:add_patha(Ebin),
    Cases = [{ktls_pair_tls13, fun() -> pair(Ebin, filename:join(Pki, "node.conf"),
                                              'tlsv1.3') end},
             {stock_inet_tls12_against_ktls,
              fun() -> stock(Ebin, filename:join(Pki, "node.conf"), 'tlsv1.2') end},
             {stock_inet_tls13_against_ktls,
              fun() -> stock(Ebin, filename:join(Pki, "n13.conf"), 'tlsv1.3') end}],
    Results = [run(Name, Fun) || {Name, Fun} <- Cases],
    halt(case lists:all(fun(R) -> R end, Results) of true -> 0; false -> 1 end);
main(_) ->
    io:format("usage: erl_ktls.escript EBIN PKI_DIR~n"),
    halt(2).

run(Name, Fun) ->
    T0 = erlang:monotonic_time(millisecond),
    Result = try Fun() of
                 Detail -> {passed, Detail}
             catch
                 C:E:S -> {failed, {C, E, S}}
             end,
    [stop(P) || P <- erase_peers()],
    Ms = erlang:monotonic_time(millisecond) - T0,
    {Verdict, What} = Result,
    io:format("ERL_CASE ~s ~s ~w ms ~0tp~n", [Name, Verdict, Ms, What]),
    Verdict =:= passed.

start(Name, Args) ->
    Cookie = "ktls_vm_cookie",
    {ok, P, N} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                              connection => standard_io, wait_boot => 120000,
                              args => ["-setcookie", Cookie, "-connect_all", "false" | Args]}),
    put(peers, [P | case get(peers) of undefined -> []; L -> L end]),
    {P, N}.

erase_peers() ->
    case erase(peers) of undefined -> []; L -> L end.

stop(P) -> catch peer:stop(P).

ktls(Ebin, Name, Conf) ->
    start(Name, ["-pa", Ebin, "-proto_dist", "ktls_filter", "-ktls_filter_optfile", Conf,
                 "-ktls_filter", "ktls", "required",
                 "-ktls_filter", "allow_mfa", "[{lists,'_','_'},{erlang,node,0}]"]).

call(P, M, F, A) -> peer:call(P, M, F, A, 120000).

%% The one connection of a ktls_filter node is carried by the kernel.
in_kernel(P, Version) ->
    [#{tls := Tls}] = call(P, ktls_filter, connections, []),
    #{protocol := Version, kernel_tx := true, kernel_rx := true,
      kernel_fallback := undefined, records_in := 0, records_out := 0} = Tls,
    #{ktls_installs := I, ktls_fallbacks := 0} = call(P, ktls_filter, carrier_stats, []),
    true = I >= 1,
    {Version, maps:get(cipher, Tls)}.

exchange(P1, N2, Bytes) ->
    Big = crypto:strong_rand_bytes(Bytes),
    Big = call(P1, erpc, call, [N2, lists, last, [[Big]]]),
    [1, 2, 3] = call(P1, erpc, call, [N2, lists, seq, [1, 3]]),
    ok.

pair(Ebin, Conf, Version) ->
    {A, _NA} = ktls(Ebin, "vma", Conf),
    {B, NB} = ktls(Ebin, "vmb", Conf),
    pong = call(A, net_adm, ping, [NB]),
    ok = exchange(A, NB, 4 * 1024 * 1024),
    Small = [call(A, erpc, call, [NB, erlang, node, []]) || _ <- lists:seq(1, 200)],
    200 = length([N || N <- Small, N =:= NB]),
    {in_kernel(A, Version), in_kernel(B, Version)}.

stock(Ebin, Conf, Version) ->
    {K, NK} = ktls(Ebin, "vmk", Conf),
    {S, NS} = start("vms", ["-proto_dist", "inet_tls", "-ssl_dist_optfile", Conf]),
    pong = call(S, net_adm, ping, [NK]),
    ok = exchange(S, NK, 2 * 1024 * 1024),
    ok = exchange(K, NS, 2 * 1024 * 1024),
    in_kernel(K, Version).
