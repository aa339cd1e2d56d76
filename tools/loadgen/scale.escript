#!/usr/bin/env escript
%%! -noshell
%% ./ktls loadgen scale [--conns N] [--ticktime T] [--window S] [--carriers a,b,...]
%%                      [--tls OPTFILE]
%%
%% One target node per carrier (same VM flags), each holding up to N idle
%% simulated-node connections from one ktls_loadgen:
%%  - memory per idle connection: erlang:memory(total) and RSS of the target
%%    with the connections minus the same node before any (both after a
%%    garbage collection of every process), divided by the connections up
%%    (length(nodes(hidden)) on the target) when the memory was read;
%%  - CPU of ticking them: the target's CPU time (/proc) over a window with
%%    the connections idle, minus an equal window before any, at
%%    net_ticktime T (a tick every T/4 s each way), and scaled to OTP's
%%    default of 60 s (T = 60 measures that directly);
%%  - handshakes per second while the connections came up.
%% Carriers: ktls_filter (rx_reader port, the default), ktls_filter_ring
%% (-ktls_filter rx_reader ring), inet_tcp (one descriptor a connection
%% each: the receive port polls the socket itself), and over
%% TLS ktls_filter_tls, ktls_filter_tls_ring and inet_tls (certificates of
%% tools/certs.sh in OUT/pki unless --tls OPTFILE). A target gets at most
%% what its descriptor limit leaves room for after its baseline; the report
%% says where a carrier got fewer than N and why.
%% The targets are controlled over stdio (peer), so the measuring node is not
%% one of their connections. Report: scale.md and scale.json in OUT.
-mode(compile).

-define(CARRIERS, [ktls_filter, ktls_filter_ring, inet_tcp,
                   ktls_filter_tls, ktls_filter_tls_ring, inet_tls]).
-define(FD_MARGIN, 64).  % descriptors left free on a target (accept, files, /proc)

main([Root, LgBin, LgEbin, Out | Args]) ->
    Opts0 = parse(Args, #{conns => 10000, ticktime => 8, window => 20, carriers => ?CARRIERS}),
    Carriers = maps:get(carriers, Opts0),
    case Carriers -- ?CARRIERS of
        [] -> ok;
        Bad -> usage(io_lib:format("unknown carrier(s) ~p", [Bad]))
    end,
    Opts = case lists:any(fun(C) -> maps:get(tls, spec(C, "")) end, Carriers) of
               true -> Opts0#{tls => tls_optfile(Root, Out, maps:get(tls, Opts0, undefined))};
               false -> Opts0
           end,
    KtlsEbin = filename:join([Root, "_build", "lib", "ktls_filter", "ebin"]),
    io:format("scale: ~p idle connections per target (as descriptors allow), net_ticktime ~p, "
              "CPU window ~p s, descriptor limit ~s, load average ~s~n",
              [maps:get(conns, Opts), maps:get(ticktime, Opts), maps:get(window, Opts),
               fd_limit(), loadavg()]),
    Rows = [measure(C, Opts, KtlsEbin, LgBin, LgEbin, Out) || C <- Carriers],
    Md = markdown(Rows, Opts),
    io:put_chars(Md),
    ok = file:write_file(filename:join(Out, "scale.md"), Md),
    ok = file:write_file(filename:join(Out, "scale.json"), json(Rows, Opts)),
    io:format("scale: report in ~s/scale.{md,json}~n", [Out]),
    halt(0).

fd_limit() -> string:trim(os:cmd("ulimit -n")).

loadavg() ->
    {ok, B} = file:read_file("/proc/loadavg"),
    lists:join(" ", lists:sublist(string:lexemes(binary_to_list(B), " "), 3)).

%% Dist flags, TLS or not, and descriptors per connection of each carrier.
spec(ktls_filter, _Tls) ->
    #{dist => ["-proto_dist", "ktls_filter"], tls => false, fds => 1,
      fds_why => "rx_reader port: the socket (the receive port polls it)"};
spec(ktls_filter_ring, _Tls) ->
    #{dist => ["-proto_dist", "ktls_filter", "-ktls_filter", "rx_reader", "ring"], tls => false,
      fds => 1, fds_why => "rx_reader ring: the socket only"};
spec(inet_tcp, _Tls) ->
    #{dist => ["-proto_dist", "inet_tcp"], tls => false, fds => 1, fds_why => "the socket"};
spec(ktls_filter_tls, Tls) ->
    (spec(ktls_filter, Tls))#{dist => ["-proto_dist", "ktls_filter", "-ktls_filter_optfile", Tls],
                              tls => true};
spec(ktls_filter_tls_ring, Tls) ->
    (spec(ktls_filter_ring, Tls))#{dist => ["-proto_dist", "ktls_filter", "-ktls_filter", "rx_reader",
                                            "ring", "-ktls_filter_optfile", Tls],
                                   tls => true};
spec(inet_tls, Tls) ->
    #{dist => ["-proto_dist", "inet_tls", "-ssl_dist_optfile", Tls], tls => true, fds => 1,
      fds_why => "the socket"}.

%% The TLS options (server side for the targets, client side for the swarm):
%% the given file, or a throwaway CA and certificate made by tools/certs.sh.
tls_optfile(_Root, _Out, File) when is_list(File) ->
    filelib:is_regular(File) orelse usage(io_lib:format("--tls ~s: no such file", [File])),
    File;
tls_optfile(Root, Out, undefined) ->
    Dir = filename:join(Out, "pki"),
    Log = os:cmd(filename:join([Root, "tools", "certs.sh"]) ++ " " ++ Dir ++
                     " scale@127.0.0.1 2>&1"),
    File = filename:join(Dir, "scale.conf"),
    filelib:is_regular(File) orelse
        usage(io_lib:format("tools/certs.sh made no ~s:~n~s", [File, Log])),
    File.

parse([], O) -> O;
parse(["--conns", N | R], O) -> parse(R, O#{conns => list_to_integer(N)});
parse(["--ticktime", N | R], O) -> parse(R, O#{ticktime => list_to_integer(N)});
parse(["--window", N | R], O) -> parse(R, O#{window => list_to_integer(N)});
parse(["--tls", F | R], O) -> parse(R, O#{tls => F});
parse(["--carriers", L | R], O) ->
    parse(R, O#{carriers => [list_to_atom(C) || C <- string:lexemes(L, ",")]});
parse([A | _], _) ->
    usage(io_lib:format("unknown argument ~s", [A])).

usage(Why) ->
    io:format(standard_error, "scale: ~s~n"
              "usage: ./ktls loadgen scale [--conns N] [--ticktime T] [--window S] [--tls OPTFILE]"
              " [--carriers C,...]~n"
              "  C: ~s (default all)~n",
              [Why, lists:join(",", [atom_to_list(C) || C <- ?CARRIERS])]),
    halt(2).

measure(Carrier, Opts, KtlsEbin, LgBin, LgEbin, Out) ->
    Requested = maps:get(conns, Opts),
    Window = maps:get(window, Opts),
    Tick = maps:get(ticktime, Opts),
    TlsFile = maps:get(tls, Opts, ""),
    #{dist := Dist, tls := Tls, fds := FdsPer, fds_why := FdsWhy} = spec(Carrier, TlsFile),
    Port = free_port(),
    Cookie = "scale_" ++ os:getpid(),
    Args = ["-setcookie", Cookie, "-pa", KtlsEbin, "-pa", LgEbin, "-connect_all", "false",
            "-epmd_module", "ktls_filter_epmd", "-start_epmd", "false",
            "-ktls_filter_port", integer_to_list(Port),
            "-kernel", "net_ticktime", integer_to_list(Tick) | Dist],
    Name = "scale_" ++ atom_to_list(Carrier) ++ "_" ++ os:getpid(),
    {ok, Peer, _Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                     connection => standard_io, args => Args,
                                     wait_boot => 30000}),
    try
        Call = fun(M, F, A) -> peer:call(Peer, M, F, A, 120000) end,
        OsPid = list_to_integer(Call(os, getpid, [])),
        timer:sleep(2000),
        Base = snapshot(Call, OsPid, Carrier),
        %% Connections the target's descriptors leave room for.
        FdLimit = target_fd_limit(OsPid),
        Cap = max(0, (FdLimit - maps:get(fds, Base) - ?FD_MARGIN) div FdsPer),
        N = min(Requested, Cap),
        CapNote = case N < Requested of
                      true ->
                          fmt("~p connections of ~p requested: descriptor limit ~p, "
                                        "~p open before, ~p kept free, ~p per connection (~s)",
                                        [N, Requested, FdLimit, maps:get(fds, Base), ?FD_MARGIN,
                                         FdsPer, FdsWhy]);
                      false -> <<>>
                  end,
        [io:format("~p: ~s~n", [Carrier, CapNote]) || CapNote =/= <<>>],
        BaseCpu = cpu_window(OsPid, Window),
        io:format("~p: baseline ~.1f MiB (erlang:memory), RSS ~.1f MiB, ~p processes, ~p fds, "
                  "idle CPU ~.2f %, load average ~s~n",
                  [Carrier, mib(maps:get(mem, Base)), mib(maps:get(rss, Base)),
                   maps:get(procs, Base), maps:get(fds, Base), BaseCpu, loadavg()]),
        RunDir = filename:join(Out, atom_to_list(Carrier)),
        %% TLS handshakes are slower: more time to come up.
        RampMs = case Tls of true -> 300000; false -> 120000 end,
        %% Long enough to come up, settle and measure; ended early with SIGTERM.
        Duration = RampMs div 1000 + Window + 60,
        LgArgs = ["idle", "--port", integer_to_list(Port), "--cookie", Cookie,
                  "--conns", integer_to_list(N), "--duration", integer_to_list(Duration),
                  "--handshake-threads", "8", "--stats-name", "", "--no-progress",
                  "--target-pid", integer_to_list(OsPid), "--out", RunDir]
            ++ case Tls of true -> ["--tls", TlsFile]; false -> [] end,
        Lg = open_port({spawn_executable, LgBin},
                       [{args, LgArgs}, exit_status, use_stdio, stderr_to_stdout, binary]),
        {os_pid, LgPid} = erlang:port_info(Lg, os_pid),
        T0 = erlang:monotonic_time(millisecond),
        Up = wait_conns(Call, N, RampMs, Lg),
        UpMs = erlang:monotonic_time(millisecond) - T0,
        io:format("~p: ~p of ~p connections up after ~.1f s~n", [Carrier, Up, N, UpMs / 1000]),
        timer:sleep(3000),
        Loaded = snapshot(Call, OsPid, Carrier),
        LoadCpu = cpu_window(OsPid, Window),
        StillUp = conns(Call),
        os:cmd("kill -TERM " ++ integer_to_list(LgPid)),
        {LgStatus, LgOutput} = collect(Lg, 60000, []),
        ok = filelib:ensure_dir(filename:join(RunDir, "loadgen.log")),
        ok = file:write_file(filename:join(RunDir, "loadgen.log"), LgOutput),
        Report = read_report(filename:join(RunDir, "report.json")),
        Gone = wait_until(fun() -> conns(Call) =:= 0 end, 60000),
        After = snapshot(Call, OsPid, Carrier),
        Held = maps:get(conns, Loaded),
        Per = fun(K) -> (maps:get(K, Loaded) - maps:get(K, Base)) / max(Held, 1) end,
        TickCpu = LoadCpu - BaseCpu,
        Row = #{carrier => Carrier, requested => Requested, conns => N, up => Up,
                held => Held, still_up => StillUp, cap_note => CapNote,
                fd_limit => FdLimit, fds_per_conn_expected => FdsPer,
                up_seconds => UpMs / 1000,
                handshakes_per_s => Up / max(UpMs / 1000, 0.001),
                loadgen_exit => LgStatus, loadgen => Report, gone_after => Gone,
                mem_per_conn => Per(mem), rss_per_conn => Per(rss),
                procs_per_conn => Per(procs), fds_per_conn => Per(fds),
                ports_per_conn => Per(ports),
                base => Base, loaded => Loaded, 'after' => After,
                cpu_idle_pct => BaseCpu, cpu_loaded_pct => LoadCpu,
                tick_cpu_pct => TickCpu,
                tick_cpu_pct_at_60s => TickCpu * Tick / 60,
                tick_cpu_pct_at_60s_per_10k => TickCpu * Tick / 60 * 10000 / max(StillUp, 1),
                ticks_per_s => 2 * StillUp * 4 / Tick,
                loadavg => loadavg()},
        io:format("~p: ~p held, ~.1f KiB/conn (erlang:memory), ~.1f KiB/conn (RSS), "
                  "~.2f fds/conn, tick CPU ~.2f % at net_ticktime ~p (~.2f % at 60)~n",
                  [Carrier, Held, maps:get(mem_per_conn, Row) / 1024,
                   maps:get(rss_per_conn, Row) / 1024, maps:get(fds_per_conn, Row), TickCpu, Tick,
                   maps:get(tick_cpu_pct_at_60s, Row)]),
        Row
    after
        peer:stop(Peer)
    end.

fmt(F, A) -> iolist_to_binary(io_lib:format(F, A)).

%% The soft "Max open files" of the target process.
target_fd_limit(OsPid) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/limits"),
    {match, [Soft]} = re:run(B, "Max open files +([0-9]+)", [{capture, all_but_first, list}]),
    list_to_integer(Soft).

%% The target's memory, processes, descriptors, connections (and ktls_filter's
%% buffer pool), after collecting every process.
snapshot(Call, OsPid, Carrier) ->
    ok = Call(ktls_loadgen_target, gc_all, []),
    Mem = Call(erlang, memory, []),
    %% ktls_filter's receive buffer pool (outside erlang:memory, inside RSS).
    Pool = case atom_to_list(Carrier) of
               "ktls_filter" ++ _ ->
                   try maps:get(pool, Call(ktls_filter, carrier_stats, []))
                   catch _:_ -> #{}
                   end;
               _ -> #{}
           end,
    #{pool => Pool, mem => proplists:get_value(total, Mem), rss => rss(OsPid),
      mem_processes => proplists:get_value(processes, Mem),
      mem_binary => proplists:get_value(binary, Mem),
      mem_ets => proplists:get_value(ets, Mem),
      mem_system => proplists:get_value(system, Mem),
      conns => conns(Call),
      procs => Call(erlang, system_info, [process_count]),
      ports => Call(erlang, system_info, [port_count]),
      fds => length(element(2, file:list_dir("/proc/" ++ integer_to_list(OsPid) ++ "/fd")))}.

rss(OsPid) ->
    {ok, Statm} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/statm"),
    [_, Resident | _] = binary:split(Statm, <<" ">>, [global]),
    binary_to_integer(Resident) * 4096.

%% CPU of the target over Window seconds, in % of one core.
cpu_window(OsPid, Window) ->
    C0 = cpu_ticks(OsPid),
    T0 = erlang:monotonic_time(millisecond),
    timer:sleep(Window * 1000),
    C1 = cpu_ticks(OsPid),
    T1 = erlang:monotonic_time(millisecond),
    (C1 - C0) * 10 / (T1 - T0) * 100.  % 100 clock ticks per second (USER_HZ)

cpu_ticks(OsPid) ->
    {ok, Stat} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat"),
    [_, After] = string:split(Stat, ") ", trailing),
    Fields = string:lexemes(After, " "),
    list_to_integer(binary_to_list(lists:nth(12, Fields))) +
        list_to_integer(binary_to_list(lists:nth(13, Fields))).

conns(Call) -> length(Call(erlang, nodes, [hidden])).

wait_conns(Call, N, Ms, Lg) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    wait_conns(Call, N, Deadline, Lg, {0, erlang:monotonic_time(millisecond)}).

%% Until N are up, the deadline, or no progress for 15 s (a target out of
%% descriptors refuses the rest).
wait_conns(Call, N, Deadline, Lg, {Best, Since}) ->
    Up = conns(Call),
    Now = erlang:monotonic_time(millisecond),
    receive
        {Lg, {exit_status, S}} -> error({loadgen_exited, S, Up})
    after 0 -> ok
    end,
    flush_port(Lg),
    {Best1, Since1} = if Up > Best -> {Up, Now}; true -> {Best, Since} end,
    if Up >= N -> Up;
       Now > Deadline -> Up;
       Now - Since1 > 15000 -> Up;
       true ->
           timer:sleep(500),
           wait_conns(Call, N, Deadline, Lg, {Best1, Since1})
    end.

flush_port(Lg) ->
    receive {Lg, {data, _}} -> flush_port(Lg) after 0 -> ok end.

collect(Lg, Ms, Acc) ->
    receive
        {Lg, {data, D}} -> collect(Lg, Ms, [D | Acc]);
        {Lg, {exit_status, S}} -> {S, lists:reverse(Acc)}
    after Ms -> {timeout, lists:reverse(Acc)}
    end.

wait_until(F, Ms) when Ms =< 0 ->
    case F() of true -> ok; false -> timeout end;
wait_until(F, Ms) ->
    case F() of
        true -> ok;
        false -> timer:sleep(200), wait_until(F, Ms - 200)
    end.

%% The few numbers the scale report needs from the loadgen's report.json:
%% its own count of connections, failures, ticks and the TLS negotiated.
read_report(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            Nums = [{K, num(Bin, atom_to_list(K))}
                    || K <- [error_total, peak_up, up_at_end, all_up_s, handshakes_ok,
                             handshakes_failed, ticks_received]],
            Transport = case re:run(Bin, "\"transport\":\"([^\"]*)\"",
                                    [{capture, all_but_first, binary}]) of
                            {match, [T]} -> T;
                            nomatch -> <<"?">>
                        end,
            maps:from_list([{transport, Transport} | Nums]);
        _ -> #{error_total => -1, peak_up => -1, up_at_end => -1, all_up_s => -1,
               handshakes_ok => -1, handshakes_failed => -1, ticks_received => -1,
               transport => <<"no report.json">>}
    end.

num(Bin, Key) ->
    case re:run(Bin, "\"" ++ Key ++ "\":(-?[0-9.]+)", [{capture, all_but_first, list}]) of
        {match, [V]} ->
            case string:to_float(V) of
                {F, []} -> F;
                _ -> list_to_integer(V)
            end;
        nomatch -> -1
    end.

free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, P} = inet:port(S),
    gen_tcp:close(S),
    P.

mib(B) -> B / 1048576.

markdown(Rows, Opts) ->
    Tick = maps:get(ticktime, Opts),
    H = io_lib:format(
          "# Scale: up to ~p idle simulated-node connections per target~n~n"
          "net_ticktime ~p on the targets (a tick every ~.1f s each way); CPU windows of ~p s; "
          "memory after a garbage collection of every process, per connection held on the "
          "target (length(nodes(hidden))); descriptor limit ~s; load average at the end ~s "
          "(~s).~n~n"
          "| carrier | requested | held | loadgen peak / at end | up after | handshakes/s "
          "| erlang:memory / conn | RSS / conn | processes / conn | fds / conn | idle CPU "
          "| CPU with conns | tick CPU | tick CPU at net_ticktime 60 | same, per 10,000 conns "
          "| transport | loadgen errors |~n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|~n",
          [maps:get(conns, Opts), Tick, Tick / 4, maps:get(window, Opts), fd_limit(), loadavg(),
           string:trim(os:cmd("nproc")) ++ " cores"]),
    Lines = [io_lib:format("| ~p | ~p | ~p | ~p / ~p | ~.1f s | ~b | ~.1f KiB | ~.1f KiB | ~.2f "
                           "| ~.2f | ~.2f % | ~.2f % | ~.2f % | ~.2f % | ~.2f % | ~s | ~p |~n",
                           [maps:get(carrier, R), maps:get(requested, R), maps:get(held, R),
                            lg(peak_up, R), lg(up_at_end, R), maps:get(up_seconds, R),
                            round(maps:get(handshakes_per_s, R)),
                            maps:get(mem_per_conn, R) / 1024, maps:get(rss_per_conn, R) / 1024,
                            float(maps:get(procs_per_conn, R)), float(maps:get(fds_per_conn, R)),
                            maps:get(cpu_idle_pct, R), maps:get(cpu_loaded_pct, R),
                            maps:get(tick_cpu_pct, R), maps:get(tick_cpu_pct_at_60s, R),
                            maps:get(tick_cpu_pct_at_60s_per_10k, R), lg(transport, R),
                            lg(error_total, R)])
             || R <- Rows],
    Fewer = [["\n", notes(R)] || R <- Rows, notes(R) =/= []],
    Goals = ["\n\nIssue 13 targets: at most 64 KiB per idle connection, ticking 10,000 idle "
             "connections under 5 % of one core (net_ticktime 60).\n"
             | [io_lib:format("~n- ~p: RSS ~s, erlang:memory ~s, tick CPU ~s",
                              [maps:get(carrier, R),
                               verdict(maps:get(rss_per_conn, R) =< 65536),
                               verdict(maps:get(mem_per_conn, R) =< 65536),
                               verdict(maps:get(tick_cpu_pct_at_60s_per_10k, R) < 5.0)])
                || R <- Rows]],
    Pools = [io_lib:format("~n- ~p: ~.1f MiB in arenas, ~p buffers in use (~.2f per connection held), "
                           "~p misses",
                           [maps:get(carrier, R), mib(maps:get(arena_bytes, P, 0)),
                            maps:get(buffers_in_use, P, 0),
                            maps:get(buffers_in_use, P, 0) / max(maps:get(held, R), 1),
                            maps:get(misses, P, 0)])
             || R <- Rows, P <- [maps:get(pool, maps:get(loaded, R))], map_size(P) > 0],
    Leak = [io_lib:format("~n~p after the loadgen left: ~p processes (~p before), ~p fds (~p before), "
                          "~.1f MiB erlang:memory (~.1f before), connections gone: ~p",
                          [maps:get(carrier, R), maps:get(procs, maps:get('after', R)),
                           maps:get(procs, maps:get(base, R)), maps:get(fds, maps:get('after', R)),
                           maps:get(fds, maps:get(base, R)), mib(maps:get(mem, maps:get('after', R))),
                           mib(maps:get(mem, maps:get(base, R))), maps:get(gone_after, R)])
            || R <- Rows],
    lists:flatten([H, Lines, case Fewer of [] -> []; _ -> ["\nFewer connections than requested:\n",
                                                             Fewer] end,
                   Goals, "\n",
                   case Pools of
                       [] -> [];
                       _ -> ["\nktls_filter's receive buffer pool with the connections up "
                             "(in RSS, not in erlang:memory):\n", Pools, "\n"]
                   end, Leak, "\n"]).

lg(K, R) -> maps:get(K, maps:get(loadgen, R)).

verdict(true) -> "met";
verdict(false) -> "NOT met".

%% Why a carrier held fewer connections than requested, if it did.
notes(R) ->
    #{carrier := C, conns := N, held := Held, still_up := Still} = R,
    Cap = case maps:get(cap_note, R) of
              <<>> -> [];
              Note -> [io_lib:format("- ~p: capped at ~s.~n", [C, Note])]
          end,
    Short = case Held < N of
                true ->
                    [io_lib:format("- ~p: ~p of the ~p asked for came up (loadgen: ~p handshakes "
                                   "failed, see ~p/loadgen.log).~n",
                                   [C, Held, N, lg(handshakes_failed, R), C])];
                false -> []
            end,
    Lost = case Still < Held of
               true -> [io_lib:format("- ~p: ~p of ~p still up after the CPU window.~n",
                                      [C, Still, Held])];
               false -> []
           end,
    Cap ++ Short ++ Lost.

json(Rows, Opts) ->
    Str = fun(S) -> [$", string:replace(string:replace(S, "\\", "\\\\", all), "\"", "\\\"", all),
                     $"] end,
    Enc = fun Enc(M) when is_map(M) ->
                  ["{", lists:join(",", [[$", atom_to_list(K), "\":", Enc(V)]
                                         || {K, V} <- lists:sort(maps:to_list(M))]), "}"];
              Enc(A) when is_atom(A) -> [$", atom_to_list(A), $"];
              Enc(I) when is_integer(I) -> integer_to_list(I);
              Enc(F) when is_float(F) -> io_lib:format("~.4f", [F]);
              Enc(B) when is_binary(B) -> Str(binary_to_list(B));
              Enc([]) -> "[]";
              Enc(L) when is_list(L) ->
                  case io_lib:printable_list(L) of
                      true -> Str(L);
                      false -> ["[", lists:join(",", [Enc(X) || X <- L]), "]"]
                  end
          end,
    [Enc(#{options => Opts, rows => Rows}), "\n"].
