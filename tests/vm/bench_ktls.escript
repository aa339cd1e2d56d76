#!/usr/bin/env escript
%%! -noshell
%% The kTLS benchmark, run inside the QEMU guest by tests/vm/bench.sh: the
%% same bulk transfer between two ktls_filter nodes with the TLS record
%% layer in the kernel (ktls required), in user space (ktls off), and
%% without TLS, on the same guest. Reports MiB/s and CPU per GiB (both
%% nodes' user+system time) as a markdown table; medians of the runs.
%%
%% usage: bench_ktls.escript EBIN BENCH_EBIN OPTFILE MIB RUNS
%% (BENCH_EBIN has tools/bench/ktls_bench.beam: its bulk/3 is the workload,
%% as in ./ktls bench.)
-mode(compile).

main([Ebin, BenchEbin, Conf, MiBStr, RunsStr]) ->
    true = code:add_patha(Ebin),
    put(bench_ebin, BenchEbin),
    MiB = list_to_integer(MiBStr),
    Runs = list_to_integer(RunsStr),
    Variants = [{"ktls_filter TLS, kernel (kTLS)", tls_args(Conf, "required"), kernel},
                {"ktls_filter TLS, user space", tls_args(Conf, "off"), user},
                {"ktls_filter plain (no TLS)", [], plain}],
    Results = [{Label, [measure(Ebin, Args, Expect, MiB) || _ <- lists:seq(1, Runs)]}
               || {Label, Args, Expect} <- Variants],
    io:format("~n| ~s | MiB/s | CPU s per GiB | CPU vs user-space TLS |~n|---|---|---|---|~n",
              ["guest, " ++ integer_to_list(MiB) ++ " MiB in 64 KiB messages"]),
    UserCpu = median([C || {_, C} <- element(2, lists:keyfind("ktls_filter TLS, user space", 1,
                                                               Results))]),
    [begin
         Rate = median([R || {R, _} <- Rs]),
         Cpu = median([C || {_, C} <- Rs]),
         io:format("| ~s | ~.1f | ~.2f | ~.2fx |~n", [Label, Rate, Cpu, Cpu / UserCpu])
     end || {Label, Rs} <- Results],
    halt(0);
main(_) ->
    io:format("usage: bench_ktls.escript EBIN BENCH_EBIN OPTFILE MIB RUNS~n"),
    halt(2).

tls_args(Conf, Ktls) ->
    ["-ktls_filter_optfile", Conf, "-ktls_filter", "ktls", Ktls].

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).

start(Ebin, Name, Args) ->
    {ok, P, N} = peer:start(#{name => Name ++ "_" ++ integer_to_list(erlang:unique_integer([positive])),
                              host => "127.0.0.1", longnames => true,
                              connection => standard_io, wait_boot => 120000,
                              args => ["-setcookie", "ktls_vm_bench", "-connect_all", "false",
                                       "-pa", Ebin, "-pa", get(bench_ebin),
                                       "-proto_dist", "ktls_filter",
                                       "-ktls_filter", "allow_mfa", "[{ktls_bench,'_','_'}]"
                                       | Args]}),
    {P, N}.

call(P, M, F, A) -> peer:call(P, M, F, A, 600000).

%% user + system seconds of the node's OS process so far.
cpu(P) ->
    {ok, Stat} = call(P, file, read_file, ["/proc/self/stat"]),
    [_, Rest] = binary:split(Stat, <<") ">>),
    Fields = binary:split(Rest, <<" ">>, [global]),
    Ticks = binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)),
    Ticks / 100.

measure(Ebin, Args, Expect, MiB) ->
    {A, _NA} = start(Ebin, "bencha", Args),
    {B, NB} = start(Ebin, "benchb", Args),
    try
        pong = call(A, net_adm, ping, [NB]),
        Layer = case call(A, ktls_filter, connections, []) of
                    [#{tls := #{kernel_tx := true, kernel_rx := true}}] -> kernel;
                    [#{tls := #{kernel_tx := false, kernel_rx := false}}] -> user;
                    [#{tls := undefined}] -> plain
                end,
        Expect = Layer,
        Cpu0 = cpu(A) + cpu(B),
        {_Bytes, Us} = call(A, ktls_bench, bulk, [NB, 65536, MiB * 16]),
        Cpu = cpu(A) + cpu(B) - Cpu0,
        Rate = MiB / (Us / 1.0e6),
        io:format("  ~p: ~.1f MiB/s, ~.2f CPU s~n", [Layer, Rate, Cpu]),
        {Rate, Cpu / (MiB / 1024)}
    after
        catch peer:stop(A),
        catch peer:stop(B)
    end.

