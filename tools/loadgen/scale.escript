#!/usr/bin/env escript
%%! -noshell
%% ./ktls loadgen scale [--conns N] [--ticktime T] [--window S] [--carriers a,b]
%%
%% One target node per carrier (ktls_filter, then inet_tcp; same VM flags),
%% each holding N idle simulated-node connections from one ktls_loadgen:
%%  - memory per idle connection: erlang:memory(total) and RSS of the target
%%    with N connections minus the same node before any (both after a
%%    garbage collection of every process), divided by N;
%%  - CPU of ticking them: the target's CPU time (/proc) over a window with
%%    N idle connections, minus an equal window before any, at net_ticktime T
%%    (a tick every T/4 s each way), and scaled to OTP's default of 60 s;
%%  - handshakes per second while the N connections came up.
%% The targets are controlled over stdio (peer), so the measuring node is not
%% one of their connections. Report: scale.md and scale.json in OUT.
-mode(compile).

main([Root, LgBin, LgEbin, Out | Args]) ->
    Opts = parse(Args, #{conns => 10000, ticktime => 8, window => 20,
                         carriers => [ktls_filter, inet_tcp]}),
    KtlsEbin = filename:join([Root, "_build", "lib", "ktls_filter", "ebin"]),
    io:format("scale: ~p idle connections per target, net_ticktime ~p, CPU window ~p s, "
              "descriptor limit ~s~n",
              [maps:get(conns, Opts), maps:get(ticktime, Opts), maps:get(window, Opts),
               fd_limit()]),
    Rows = [measure(C, Opts, KtlsEbin, LgBin, LgEbin, Out) || C <- maps:get(carriers, Opts)],
    Md = markdown(Rows, Opts),
    io:put_chars(Md),
    ok = file:write_file(filename:join(Out, "scale.md"), Md),
    ok = file:write_file(filename:join(Out, "scale.json"), json(Rows, Opts)),
    io:format("scale: report in ~s/scale.{md,json}~n", [Out]),
    halt(0).

%% A ktls_filter target needs two descriptors per connection (the socket and
%% the receive port's duplicate), inet_tcp one: the limit caps the run.
fd_limit() -> string:trim(os:cmd("ulimit -n")).

parse([], O) -> O;
parse(["--conns", N | R], O) -> parse(R, O#{conns => list_to_integer(N)});
parse(["--ticktime", N | R], O) -> parse(R, O#{ticktime => list_to_integer(N)});
parse(["--window", N | R], O) -> parse(R, O#{window => list_to_integer(N)});
parse(["--carriers", L | R], O) ->
    parse(R, O#{carriers => [list_to_atom(C) || C <- string:lexemes(L, ",")]});
parse([A | _], _) ->
    io:format(standard_error, "scale: unknown argument ~s~n"
              "usage: ./ktls loadgen scale [--conns N] [--ticktime T] [--window S]"
              " [--carriers ktls_filter,inet_tcp]~n", [A]),
    halt(2).

measure(Carrier, Opts, KtlsEbin, LgBin, LgEbin, Out) ->
    N = maps:get(conns, Opts),
    Window = maps:get(window, Opts),
    Port = free_port(),
    Cookie = "scale_" ++ os:getpid(),
    Dist = case Carrier of
               ktls_filter -> ["-proto_dist", "ktls_filter"];
               inet_tcp -> ["-proto_dist", "inet_tcp"]
           end,
    Args = ["-setcookie", Cookie, "-pa", KtlsEbin, "-pa", LgEbin, "-connect_all", "false",
            "-epmd_module", "ktls_filter_epmd", "-start_epmd", "false",
            "-ktls_filter_port", integer_to_list(Port),
            "-kernel", "net_ticktime", integer_to_list(maps:get(ticktime, Opts)) | Dist],
    Name = "scale_" ++ atom_to_list(Carrier) ++ "_" ++ os:getpid(),
    {ok, Peer, _Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                     connection => standard_io, args => Args,
                                     wait_boot => 30000}),
    try
        Call = fun(M, F, A) -> peer:call(Peer, M, F, A, 60000) end,
        OsPid = list_to_integer(Call(os, getpid, [])),
        timer:sleep(2000),
        Base = snapshot(Call, OsPid),
        BaseCpu = cpu_window(OsPid, Window),
        io:format("~p: baseline ~.1f MiB (erlang:memory), RSS ~.1f MiB, ~p processes, "
                  "idle CPU ~.2f %~n",
                  [Carrier, mib(maps:get(mem, Base)), mib(maps:get(rss, Base)),
                   maps:get(procs, Base), BaseCpu]),
        RunDir = filename:join(Out, atom_to_list(Carrier)),
        %% Long enough to come up, settle and measure; ended early with SIGTERM.
        Duration = 120 + Window,
        LgArgs = ["idle", "--port", integer_to_list(Port), "--cookie", Cookie,
                  "--conns", integer_to_list(N), "--duration", integer_to_list(Duration),
                  "--handshake-threads", "8", "--stats-name", "", "--no-progress",
                  "--target-pid", integer_to_list(OsPid), "--out", RunDir],
        Lg = open_port({spawn_executable, LgBin},
                       [{args, LgArgs}, exit_status, use_stdio, stderr_to_stdout, binary]),
        {os_pid, LgPid} = erlang:port_info(Lg, os_pid),
        T0 = erlang:monotonic_time(millisecond),
        Up = wait_conns(Call, N, 90000, Lg),
        UpMs = erlang:monotonic_time(millisecond) - T0,
        io:format("~p: ~p of ~p connections up after ~.1f s~n", [Carrier, Up, N, UpMs / 1000]),
        timer:sleep(3000),
        Loaded = snapshot(Call, OsPid),
        LoadCpu = cpu_window(OsPid, Window),
        StillUp = conns(Call),
        os:cmd("kill -TERM " ++ integer_to_list(LgPid)),
        {LgStatus, _LgOutput} = collect(Lg, 60000, []),
        Report = read_report(filename:join(RunDir, "report.json")),
        ok = wait_until(fun() -> conns(Call) =:= 0 end, 30000),
        After = snapshot(Call, OsPid),
        Per = fun(K) -> (maps:get(K, Loaded) - maps:get(K, Base)) / max(Up, 1) end,
        Tick = maps:get(ticktime, Opts),
        Row = #{carrier => Carrier, conns => N, up => Up, still_up => StillUp,
                up_seconds => UpMs / 1000,
                handshakes_per_s => Up / max(UpMs / 1000, 0.001),
                loadgen_exit => LgStatus, loadgen_errors => maps:get(error_total, Report, -1),
                mem_per_conn => Per(mem), rss_per_conn => Per(rss),
                procs_per_conn => Per(procs), fds_per_conn => Per(fds),
                base => Base, loaded => Loaded, 'after' => After,
                cpu_idle_pct => BaseCpu, cpu_loaded_pct => LoadCpu,
                tick_cpu_pct => LoadCpu - BaseCpu,
                tick_cpu_pct_at_60s => (LoadCpu - BaseCpu) * Tick / 60,
                ticks_per_s => 2 * Up * 4 / Tick},
        io:format("~p: ~.1f KiB/conn (erlang:memory), ~.1f KiB/conn (RSS), tick CPU ~.2f % "
                  "at net_ticktime ~p (~.2f % at 60)~n",
                  [Carrier, maps:get(mem_per_conn, Row) / 1024, maps:get(rss_per_conn, Row) / 1024,
                   maps:get(tick_cpu_pct, Row), Tick, maps:get(tick_cpu_pct_at_60s, Row)]),
        Row
    after
        peer:stop(Peer)
    end.

%% The target's memory, processes and descriptors, after collecting every process.
snapshot(Call, OsPid) ->
    ok = Call(ktls_loadgen_target, gc_all, []),
    #{mem => Call(erlang, memory, [total]), rss => rss(OsPid),
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

%% The few numbers the scale report needs from the loadgen's report.json.
read_report(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            maps:from_list([{K, num(Bin, atom_to_list(K))} || K <- [error_total]]);
        _ -> #{}
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
          "# Scale: ~p idle simulated-node connections per target~n~n"
          "net_ticktime ~p on the targets (a tick every ~.1f s each way); CPU windows of ~p s; "
          "memory after a garbage collection of every process; descriptor limit ~s.~n~n"
          "| carrier | up | up after | handshakes/s | erlang:memory / conn | RSS / conn "
          "| processes / conn | fds / conn | idle CPU | CPU with conns | tick CPU | tick CPU at net_ticktime 60 "
          "| loadgen errors |~n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|~n",
          [maps:get(conns, Opts), Tick, Tick / 4, maps:get(window, Opts), fd_limit()]),
    Lines = [io_lib:format("| ~p | ~p | ~.1f s | ~b | ~.1f KiB | ~.1f KiB | ~.2f | ~.2f "
                           "| ~.2f % | ~.2f % | ~.2f % | ~.2f % | ~p |~n",
                           [maps:get(carrier, R), maps:get(up, R), maps:get(up_seconds, R),
                            round(maps:get(handshakes_per_s, R)),
                            maps:get(mem_per_conn, R) / 1024, maps:get(rss_per_conn, R) / 1024,
                            float(maps:get(procs_per_conn, R)), float(maps:get(fds_per_conn, R)),
                            maps:get(cpu_idle_pct, R), maps:get(cpu_loaded_pct, R),
                            maps:get(tick_cpu_pct, R), maps:get(tick_cpu_pct_at_60s, R),
                            maps:get(loadgen_errors, R)])
             || R <- Rows],
    Leak = [io_lib:format("~n~p after the loadgen left: ~p processes (~p before), ~p fds (~p before), "
                          "~.1f MiB erlang:memory (~.1f before)",
                          [maps:get(carrier, R), maps:get(procs, maps:get('after', R)),
                           maps:get(procs, maps:get(base, R)), maps:get(fds, maps:get('after', R)),
                           maps:get(fds, maps:get(base, R)), mib(maps:get(mem, maps:get('after', R))),
                           mib(maps:get(mem, maps:get(base, R)))])
            || R <- Rows],
    lists:flatten([H, Lines, Leak, "\n"]).

json(Rows, Opts) ->
    Enc = fun Enc(M) when is_map(M) ->
                  ["{", lists:join(",", [[$", atom_to_list(K), "\":", Enc(V)]
                                         || {K, V} <- lists:sort(maps:to_list(M))]), "}"];
              Enc(A) when is_atom(A) -> [$", atom_to_list(A), $"];
              Enc(I) when is_integer(I) -> integer_to_list(I);
              Enc(F) when is_float(F) -> io_lib:format("~.4f", [F]);
              Enc(L) when is_list(L) -> ["[", lists:join(",", [Enc(X) || X <- L]), "]"]
          end,
    [Enc(#{options => Opts, rows => Rows}), "\n"].
