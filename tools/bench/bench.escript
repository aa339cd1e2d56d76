#!/usr/bin/env escript
%%! -noshell
%% ./ktls bench [--quick]: ktls_filter (plain and TLS) against inet_tcp and
%% inet_tls, two local nodes per carrier, identical VM flags, carriers
%% alternating within each repetition, medians over the repetitions, ratios
%% against inet_tcp and inet_tls, and the issue's targets with PASS/MISS.
-mode(compile).

%% Identical for every carrier. Default: schedulers do not busy-wait, so the
%% CPU column counts work, not spinning. KTLS_BENCH_VM_FLAGS overrides
%% ("default" = no flags: OTP's own defaults, as in notes/perf-anchors.md).
-define(VM_FLAGS, vm_flags()).

vm_flags() ->
    case os:getenv("KTLS_BENCH_VM_FLAGS") of
        false -> ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"];
        "default" -> [];
        Flags -> string:lexemes(Flags, " ")
    end.

main(Args) ->
    try bench(Args)
    catch
        throw:{tls_mismatch, Msg} ->
            io:format(standard_error, "bench: ~s~n", [Msg]),
            halt(1)
    end.

bench(Args) ->
    [Root, BenchEbin, OutDir | Rest] = Args,
    Quick = lists:member("--quick", Rest),
    KtlsEbin = filename:join([Root, "_build", "lib", "ktls_filter", "ebin"]),
    TlsOpt = make_tls(Root, OutDir),
    %% The bench spawns its sinks with spawn/4 of ktls_bench: allowed on
    %% purpose, everything else keeps the default policy.
    Allow = ["-ktls_filter", "allow_mfa", "[{ktls_bench,'_','_'}]"],
    %% {tls, Version}: every dist connection of the row must have negotiated
    %% Version (checked after connecting and after the setup workload);
    %% rows without it must have no TLS. Both TLS rows use the same option
    %% file (tools/certs.sh, TLS 1.3 only).
    Carriers0 = [{inet_tcp, ["-proto_dist", "inet_tcp"]},
                 {inet_tls, ["-proto_dist", "inet_tls", "-ssl_dist_optfile", TlsOpt,
                             {tls, 'tlsv1.3'}]},
                 {ktls_filter, ["-pa", KtlsEbin, "-proto_dist", "ktls_filter" | Allow]},
                 %% TLS 1.3 between two ktls_filter nodes (without kTLS in the
                 %% kernel: the carrier's user-space record layer)
                 {ktls_filter_tls, ["-pa", KtlsEbin, "-proto_dist", "ktls_filter",
                                    "-ktls_filter_optfile", TlsOpt, {tls, 'tlsv1.3'} | Allow]},
                 %% break glass: the filter only tracks headers (cost of inspection)
                 {ktls_nofilter, ["-pa", KtlsEbin, "-proto_dist", "ktls_filter",
                                  "-ktls_filter", "deep_packet_inspection", "false" | Allow]}] ++
        %% --variants: the carrier's buffer pool without THP, and ktls_filter
        %% on the THP-patched runtime (./ktls runtime build) with +MMthp true.
        case lists:member("--variants", Rest) of
            false -> [];
            true ->
                Patched = filename:join([Root, "_build", "runtime", "bin", "erl"]),
                [{ktls_filter_pool_nothp, ["-pa", KtlsEbin, "-proto_dist", "ktls_filter",
                                           "-ktls_filter", "thp", "false" | Allow]},
                 {ktls_filter_spin50, ["-pa", KtlsEbin, "-proto_dist", "ktls_filter",
                                       "-ktls_filter", "ring_spin_us", "50" | Allow]}] ++
                    [{ktls_filter_patched_thp, ["-pa", KtlsEbin, "-proto_dist", "ktls_filter",
                                                "+MMthp", "true", "+MMscs", "2048",
                                                {exec, Patched} | Allow]}
                     || filelib:is_regular(Patched)]
        end,
    Carriers = case os:getenv("KTLS_BENCH_CARRIERS") of
                   false -> Carriers0;
                   Sel -> [C || {N, _} = C <- Carriers0,
                                lists:member(atom_to_list(N), string:split(Sel, ",", all))]
               end,
    Load0 = loadavg(),
    Reps = case Quick of true -> 3; false -> 5 end,
    Scale = case Quick of true -> 1; false -> 4 end,
    io:format("bench: ~p carriers, ~p repetitions, VM flags ~s~n",
              [length(Carriers), Reps, string:join(?VM_FLAGS, " ")]),
    Results = lists:foldl(
                fun(Rep, Acc) ->
                        %% rotate the order each repetition
                        Order = rotate(Carriers, Rep),
                        lists:foldl(fun({Name, CArgs}, Acc1) ->
                                            T0 = erlang:monotonic_time(millisecond),
                                            R = run_carrier(Name, CArgs, BenchEbin, Scale),
                                            S = (erlang:monotonic_time(millisecond) - T0) / 1000,
                                            io:format("  rep ~p ~p (~.1f s): ~p~n",
                                                      [Rep, Name, S, R]),
                                            Acc1#{Name => [R | maps:get(Name, Acc1, [])]}
                                    end, Acc, Order)
                end, #{}, lists:seq(1, Reps)),
    Table = [report(Results, [N || {N, _} <- Carriers]), negotiated(Results, Carriers),
             targets(Results),
             %% other work on the machine skews every row: say how busy it was
             io_lib:format("~nMachine: ~p cores; load average (1 min) ~s at the start, ~s at the "
                           "end (the bench's own two nodes count in it).~n",
                           [erlang:system_info(logical_processors_available), Load0, loadavg()])],
    io:put_chars(Table),
    ok = file:write_file(filename:join(OutDir, "results.md"), Table),
    ok = file:write_file(filename:join(OutDir, "results.term"),
                         io_lib:format("~p.~n", [Results])),
    plot(Results, [N || {N, _} <- Carriers], OutDir),
    io:format("results in ~s~n", [OutDir]),
    halt(0).

loadavg() ->
    case file:read_file("/proc/loadavg") of
        {ok, B} -> hd(string:lexemes(binary_to_list(B), " "));
        _ -> "?"
    end.

rotate(L, N) ->
    K = N rem length(L),
    {A, B} = lists:split(K, L),
    B ++ A.

%% Two fresh nodes, all workloads, nodes stopped. A carrier whose nodes do
%% not connect is reported as failed, not fatal.
run_carrier(Name, CArgs0, BenchEbin, Scale) ->
    Cookie = "bench_" ++ integer_to_list(erlang:unique_integer([positive])),
    Exec = maps:from_list([{exec, E} || {exec, E} <- CArgs0]),
    TlsWant = proplists:get_value(tls, [T || T <- CArgs0, is_tuple(T)], none),
    CArgs = [A || A <- CArgs0, not is_tuple(A)],
    Start = fun(Tag) ->
                    peer:start(Exec#{name => atom_to_list(Name) ++ "_" ++ Tag ++ "_" ++ os:getpid(),
                                 host => "127.0.0.1", longnames => true,
                                 connection => standard_io, wait_boot => 30000,
                                 args => ?VM_FLAGS ++ ["-setcookie", Cookie, "-pa", BenchEbin,
                                                       "-connect_all", "false" | CArgs]})
            end,
    put(bench_peers, []),
    try
        {ok, A, _NA} = Start("a"),
        put(bench_peers, [A]),
        {ok, B, NB} = Start("b"),
        put(bench_peers, [A, B]),
        Call = fun(F, As) -> peer:call(A, ktls_bench, F, As, 120000) end,
        pong = peer:call(A, net_adm, ping, [NB]),
        Tls = check_tls(Name, TlsWant, Call(tls_info, [])),
        put(bench_os_pids, [Call(os_pid, []), peer:call(B, ktls_bench, os_pid, [])]),
        Bulk = fun(Size, Bytes) ->
                       Count = max(16, Bytes div Size),
                       {Moved, Us} = for_at_least(Scale, fun() -> Call(bulk, [NB, Size, Count]) end),
                       Moved / Us  % bytes/µs = MB/s
               end,
        MB = 1024 * 1024,
        R64 = Bulk(64, 8 * MB * Scale),
        R1k = Bulk(1024, 64 * MB * Scale),
        CpuA0 = Call(cpu_ticks, []),
        CpuB0 = peer:call(B, ktls_bench, cpu_ticks, []),
        %% Repeated like the other sizes (one run of 512 MB lasted a third
        %% of a second, and quick runs of one carrier spread by a fifth); the
        %% CPU column covers all of its runs.
        Bytes64k = 256 * MB * Scale,
        {Moved64k, Us64k} =
            for_at_least(Scale, fun() -> Call(bulk, [NB, 65536, Bytes64k div 65536]) end),
        CpuTicks = Call(cpu_ticks, []) - CpuA0 + peer:call(B, ktls_bench, cpu_ticks, []) - CpuB0,
        R64k = Moved64k / Us64k,
        R1m = Bulk(MB, 512 * MB * Scale),
        {N1, T1} = for_at_least(Scale, fun() -> Call(small, [NB, 1, 100000]) end),
        {N8, T8} = for_at_least(Scale, fun() -> Call(small, [NB, 8, 25000]) end),
        Rtts = Call(pingpong, [NB, 2000 * Scale]),
        Setups = Call(setup_time, [NB, 10 * Scale]),
        Tls = check_tls(Name, TlsWant, Call(tls_info, [])),  % the reconnected ones too
        #{bulk_64 => R64, bulk_1k => R1k, bulk_64k => R64k, bulk_1m => R1m,
          small_1 => N1 / T1 * 1.0e6, small_8 => N8 / T8 * 1.0e6,
          pp_p50 => pct(Rtts, 50), pp_p99 => pct(Rtts, 99),
          cpu_per_gib => (CpuTicks / 100) / (Moved64k / (1024 * MB)),
          setup_ms => pct(Setups, 50) / 1000, tls => Tls}
    catch
        throw:{tls_mismatch, _} = Mismatch:St ->
            erlang:raise(throw, Mismatch, St);
        C:E:St ->
            io:format("  ~p FAILED: ~p:~P ~P~n", [Name, C, E, 20, St, 10]),
            #{}
    after
        [catch peer:stop(P) || P <- get(bench_peers)],
        %% a wedged node does not outlive its carrier's turn
        [os:cmd("kill -9 " ++ OsPid ++ " 2>/dev/null") || OsPid <- get_default(bench_os_pids)],
        erase(bench_os_pids)
    end.

%% The TLS of A's dist connections, which must be Want ('tlsv1.3'...) or
%% none; a row that did not run what it claims stops the bench.
check_tls(Name, Want, Infos) ->
    Got = lists:usort(Infos),
    Ok = case {Want, Got} of
             {none, []} -> true;
             {none, _} -> false;
             {_, [_ | _]} -> lists:all(fun(#{protocol := P}) -> P =:= Want end, Got);
             {_, []} -> false
         end,
    case Ok of
        true -> Got;
        false -> throw({tls_mismatch,
                        io_lib:format("~p should run TLS ~p, its connections have ~p",
                                      [Name, Want, Got])})
    end.

get_default(K) ->
    case get(K) of
        undefined -> [];
        V -> V
    end.

%% Runs a throughput workload ({Amount, Microseconds}) again and again until
%% it has run for at least a second (--quick) or Scale seconds, and sums: a
%% single run of the small sizes lasts a tenth of a second, where the
%% placement of four busy threads on two cores decides as much as the
%% carrier (quick runs of one carrier spread from 366 to 688 MB/s).
for_at_least(Scale, Run) ->
    for_at_least(Scale * 1000000, Run, 0, 0).

for_at_least(MinUs, _Run, Amount, Us) when Us >= MinUs ->
    {Amount, Us};
for_at_least(MinUs, Run, Amount, Us) ->
    {A, U} = Run(),
    for_at_least(MinUs, Run, Amount + A, Us + U).

pct(Sorted, P) ->
    N = length(Sorted),
    lists:nth(max(1, min(N, round(N * P / 100))), Sorted).

median([]) -> undefined;
median(L0) ->
    L = lists:sort(L0),
    lists:nth((length(L) + 1) div 2, L).

metrics() ->
    [{bulk_64, "bulk 64 B msgs (MB/s)", higher},
     {bulk_1k, "bulk 1 KiB msgs (MB/s)", higher},
     {bulk_64k, "bulk 64 KiB msgs (MB/s)", higher},
     {bulk_1m, "bulk 1 MiB msgs (MB/s)", higher},
     {small_1, "small msgs/s, 1 sender", higher},
     {small_8, "small msgs/s, 8 senders", higher},
     {pp_p50, "ping-pong p50 (us)", lower},
     {pp_p99, "ping-pong p99 (us)", lower},
     {cpu_per_gib, "CPU s per GiB (both nodes, 64 KiB)", lower},
     {setup_ms, "connection setup p50 (ms)", lower}].

medians(Results, Name) ->
    Runs = [R || R <- maps:get(Name, Results, []), map_size(R) > 0],
    maps:from_list([{K, median([maps:get(K, R) || R <- Runs])} || {K, _, _} <- metrics()]).

report(Results, Names) ->
    Med = maps:from_list([{N, medians(Results, N)} || N <- Names]),
    %% ratio columns: every carrier against inet_tcp, ktls_filter against inet_tls
    Pairs = [{N, inet_tcp} || N <- Names, N =/= inet_tcp, lists:member(inet_tcp, Names)] ++
            [{N, inet_tls} || N <- [ktls_filter, ktls_filter_tls], lists:member(N, Names),
                              lists:member(inet_tls, Names)] ++
            %% the cost of inspection: filter on against break glass
            [{ktls_filter, ktls_nofilter} || lists:member(ktls_filter, Names),
                                            lists:member(ktls_nofilter, Names)],
    Header = ["| workload | ", lists:join(" | ", [atom_to_list(N) || N <- Names]),
              [[" | ", atom_to_list(N), " / ", atom_to_list(D)] || {N, D} <- Pairs], " |\n",
              "|---|", lists:duplicate(length(Names) + length(Pairs), "---:|"), "\n"],
    Rows = [["| ", Label, " | ",
             lists:join(" | ", [fmt(maps:get(K, maps:get(N, Med))) || N <- Names]),
             [[" | ", ratio(maps:get(K, maps:get(N, Med)), maps:get(K, maps:get(D, Med)))]
              || {N, D} <- Pairs],
             " |\n"] || {K, Label, _} <- metrics()],
    Runs = [io_lib:format("~p: ~p good runs; ", [N, length([R || R <- maps:get(N, Results, []),
                                                           map_size(R) > 0])]) || N <- Names],
    lists:flatten(["\n", Header, Rows,
                   "\nMedians over repetitions; ratios are carrier / baseline of medians from this "
                   "run (above 1 is better for throughput rows, worse for latency, CPU and setup "
                   "rows). ", Runs, "\n"]).

fmt(undefined) -> "n/a";
fmt(V) when V >= 1000 -> io_lib:format("~s", [group(round(V))]);
fmt(V) when V >= 10 -> io_lib:format("~.1f", [float(V)]);
fmt(V) -> io_lib:format("~.2f", [float(V)]).

group(N) ->
    S = integer_to_list(N),
    lists:reverse(group3(lists:reverse(S))).
group3([A, B, C, D | T]) -> [A, B, C, $, | group3([D | T])];
group3(L) -> L.

ratio(_, undefined) -> "n/a";
ratio(undefined, _) -> "n/a";
ratio(V, B) when B > 0 -> io_lib:format("~.2fx", [V / B]);
ratio(_, _) -> "n/a".

%% Grouped bars: ratio against inet_tcp per workload (>1 = better for
%% throughput rows; for latency/CPU rows the inverse is plotted so that
%% higher is better everywhere).
plot(Results, Names, OutDir) ->
    Med = maps:from_list([{N, medians(Results, N)} || N <- Names]),
    Base = maps:get(inet_tcp, Med, #{}),
    Data = filename:join(OutDir, "plot.dat"),
    Lines = [[Label0, lists:map(fun(N) ->
                                        V = maps:get(K, maps:get(N, Med)),
                                        BV = maps:get(K, Base, undefined),
                                        R = case {V, BV, Dir} of
                                                {undefined, _, _} -> 0;
                                                {_, undefined, _} -> 0;
                                                {_, 0, _} -> 0;
                                                {_, _, higher} -> V / BV;
                                                {0, _, lower} -> 0;
                                                {_, _, lower} -> BV / V
                                            end,
                                        io_lib:format(" ~.3f", [float(R)])
                                end, Names), "\n"]
             || {K, Label, Dir} <- metrics(),
                Label0 <- [io_lib:format("\"~s\"", [short(Label)])]],
    ok = file:write_file(Data, ["workload", [[" ", atom_to_list(N)] || N <- Names], "\n", Lines]),
    Png = filename:join(OutDir, "plot.png"),
    Script = io_lib:format(
               "set terminal pngcairo size 1200,600 noenhanced\nset output '~s'\n"
               "set key autotitle columnhead\n"
               "set style data histograms\nset style histogram clustered gap 1\n"
               "set style fill solid 0.8 border -1\nset key outside right top Left reverse\n"
               "set ylabel 'relative to inet_tcp (higher is better)'\n"
               "set xtics rotate by -30\nset grid ytics\nset yrange [0:*]\n"
               "set title 'ktls_filter bench (medians; latency and CPU rows inverted)'\n"
               "plot ~s\n",
               [Png, lists:join(", ", [io_lib:format("'~s' using ~p:xtic(1) title '~s'",
                                                     [Data, I + 1, atom_to_list(N)])
                                       || {I, N} <- lists:zip(lists:seq(1, length(Names)), Names)])]),
    Gp = filename:join(OutDir, "plot.gp"),
    ok = file:write_file(Gp, Script),
    Out = os:cmd("gnuplot " ++ Gp ++ " 2>&1"),
    case Out of
        "" -> ok;
        _ -> io:format("gnuplot: ~s~n", [Out])
    end.

short(Label) ->
    hd(string:split(Label, " (")).

%% One option file for both TLS rows, from ./ktls certs (tools/certs.sh):
%% throwaway CA, a certificate for 127.0.0.1, mutual authentication, TLS 1.3
%% only. Every bench node uses it (their names differ, the host does not).
make_tls(Root, OutDir) ->
    D = filename:join(OutDir, "tls"),
    Cmd = "KTLS_CERTS_VERSIONS=\"'tlsv1.3'\" " ++ filename:join([Root, "tools", "certs.sh"]) ++
        " " ++ D ++ " bench@127.0.0.1 2>&1",
    File = filename:join(D, "bench.conf"),
    case string:trim(os:cmd(Cmd)) of
        File -> File;
        Out -> error({certs_failed, Out})
    end.

%% What each TLS row negotiated (the same in every repetition, or listed).
negotiated(Results, Carriers) ->
    Lines = [io_lib:format("- ~p: ~s~n", [N, describe_tls(lists:usort(lists:append(
                                                            [maps:get(tls, R) || R <- Runs])))])
             || {N, _} <- Carriers,
                Runs <- [[R || R <- maps:get(N, Results, []), is_map_key(tls, R)]],
                Runs =/= []],
    ["\nNegotiated (checked on every run):\n", Lines].

describe_tls([]) -> "plain TCP";
describe_tls(Infos) ->
    lists:join("; ", [io_lib:format("~s ~s, record layer ~s", [P, C, L])
                      || #{protocol := P, cipher := C, record_layer := L} <- Infos]).

%% The targets of the TLS issue: ktls_filter_tls against inet_tcp / inet_tls.
%% {Metric, Baseline, Op, Limit}: ratio = ktls_filter_tls / Baseline of the
%% medians, PASS when Op holds against Limit.
target_list() ->
    [{bulk_64k, inet_tcp, '>=', 0.8},
     {cpu_per_gib, inet_tcp, '=<', 2.0},
     {small_8, inet_tls, '>=', 1.5},
     {pp_p50, inet_tcp, '=<', 1.2},
     {setup_ms, inet_tls, '=<', 0.5}].

targets(Results) ->
    Subject = ktls_filter_tls,
    Label = fun(K) -> hd([L || {M, L, _} <- metrics(), M =:= K]) end,
    Rows = [begin
                V = maps:get(K, medians(Results, Subject)),
                B = maps:get(K, medians(Results, Base)),
                {RatioS, Verdict} =
                    case {V, B} of
                        {undefined, _} -> {"n/a", "MISS (no data)"};
                        {_, undefined} -> {"n/a", "MISS (no data)"};
                        _ when B == 0 -> {"n/a", "MISS (no data)"};
                        _ ->
                            R = V / B,
                            Pass = case Op of
                                       '>=' -> R >= Limit;
                                       '=<' -> R =< Limit
                                   end,
                            {io_lib:format("~.2fx", [R]),
                             case Pass of true -> "PASS"; false -> "MISS" end}
                    end,
                OpS = case Op of '>=' -> "&ge;"; '=<' -> "&le;" end,
                ["| ", Label(K), " | ", fmt(V), " | ", atom_to_list(Base), " ", fmt(B), " | ",
                 RatioS, " | ", OpS, " ", io_lib:format("~.1fx", [Limit]), " | ", Verdict, " |\n"]
            end || {K, Base, Op, Limit} <- target_list(),
                   maps:is_key(Subject, Results), maps:is_key(Base, Results)],
    case Rows of
        [] -> [];
        _ -> ["\nTargets (", atom_to_list(Subject), " / baseline, medians of this run):\n\n",
              "| workload | ktls_filter_tls | baseline | ratio | target | result |\n",
              "|---|---:|---:|---:|---|---|\n", Rows]
    end.
