%% The loadgen swarm (tools/loadgen) against a real ktls_filter node and a
%% stock inet_tcp node, and over TLS (--tls, certificates of ./ktls certs)
%% against a ktls_filter TLS node and a stock inet_tls node: short idle,
%% storm and churn runs, each judged by its JSON report and by the target
%% itself (connections, processes and descriptors back to where they were).
-module(ktls_loadgen_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2]).
-export([idle_mesh/1, storm_echo/1, churn/1, report_files/1, attack_mix/1]).
-export([json_decode/1]).

-define(TICKTIME, 4).  % a tick every second, so a short idle run sees ticks

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [{group, ktls_filter}, {group, ktls_filter_ring}, {group, inet_tcp}, {group, ktls_filter_tls},
     {group, inet_tls}].

groups() ->
    Cases = [idle_mesh, storm_echo, churn, report_files, attack_mix],
    Tls = [idle_mesh, storm_echo, attack_mix],
    %% ktls_filter_ring: the carrier thread reads (-ktls_filter rx_reader
    %% ring), one descriptor a connection instead of two.
    [{ktls_filter, [sequence], Cases}, {ktls_filter_ring, [sequence], [idle_mesh, churn]},
     {inet_tcp, [sequence], Cases},
     {ktls_filter_tls, [sequence], Tls}, {inet_tls, [sequence], Tls}].

%% The swarm as ./ktls test's build (bazel build //...) left it, in the
%% default configuration's tree (the bazel-bin link follows the last build,
%% which may be the sanitizer stage's).
init_per_suite(Config) ->
    BazelBin = string:trim(os:cmd("cd " ++ ktls_ct_nodes:root() ++ " && bazel info bazel-bin 2>/dev/null")),
    Dir = filename:join([BazelBin, "tools", "loadgen"]),
    Bin = filename:join(Dir, "ktls_loadgen"),
    Ebin = filename:join(Dir, "ebin"),
    case filelib:is_regular(Bin) andalso
        filelib:is_regular(filename:join(Ebin, "ktls_loadgen_target.beam")) of
        true -> [{loadgen, Bin}, {loadgen_ebin, Ebin}, {tls_conf, certs(Config)} | Config];
        false -> {fail, {not_built, Dir, "run ./ktls build"}}
    end.

%% A throwaway CA and one certificate (./ktls certs): the options file
%% serves the TLS targets (server side) and the swarm (client side).
certs(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "pki"),
    Out = os:cmd(filename:join([ktls_ct_nodes:root(), "tools", "certs.sh"]) ++ " " ++ Dir ++
                     " node@127.0.0.1 2>&1"),
    ct:log("~ts", [Out]),
    filename:join(Dir, "node.conf").

end_per_suite(_Config) ->
    ok.

%% One target node per group, with the echo and stats helpers registered.
init_per_group(Carrier, Config) ->
    Port = ktls_ct_nodes:free_port(),
    Extra = ["-pa", ?config(loadgen_ebin, Config),
             "-kernel", "net_ticktime", integer_to_list(?TICKTIME),
             "-ktls_filter_port", integer_to_list(Port)],
    %% Both listen on a fixed port found by ktls_filter_epmd, so the swarm
    %% needs no epmd; ktls_filter keeps its default filter policy.
    CarrierArgs = ["-epmd_module", "ktls_filter_epmd", "-start_epmd", "false"],
    {Peer, Node} = ktls_ct_nodes:start(ktls_ct_nodes:unique("lg_" ++ atom_to_list(Carrier)),
                                       carrier(Carrier),
                                       CarrierArgs ++ tls_args(Carrier, Config) ++ Extra),
    ok = ktls_ct_nodes:call(Peer, ktls_loadgen_target, start, []),
    Config1 = [{carrier, Carrier}, {target, Peer}, {target_node, Node}, {port, Port},
               {target_pid, ktls_ct_nodes:os_pid(Peer)}, {tls, tls(Carrier)} | Config],
    warm_up(Config1),
    Config1.

%% Two connections come and go before the cases take their census: a
%% target starts some processes once, on its first connection, and keeps
%% them (a stock inet_tls target: three of ssl's, which a CI run counted
%% as left behind by idle_mesh).
warm_up(Config) ->
    T = ?config(target, Config),
    _ = loadgen(Config, "idle", ["--conns", "2", "--duration", "1"]),
    ok = ktls_ct_nodes:wait_until(fun() -> maps:get(conns, census(T)) =:= 0 end, 10000).

end_per_group(_Group, Config) ->
    ktls_ct_nodes:stop(?config(target, Config)),
    ok.

carrier(ktls_filter) -> ktls;
carrier(ktls_filter_ring) -> ktls;
carrier(ktls_filter_tls) -> ktls;
carrier(inet_tcp) -> inet_tcp;
carrier(inet_tls) -> inet_tls.

tls(Group) -> lists:member(Group, [ktls_filter_tls, inet_tls]).

tls_args(ktls_filter_tls, Config) -> ["-ktls_filter_optfile", ?config(tls_conf, Config)];
tls_args(inet_tls, Config) -> ["-ssl_dist_optfile", ?config(tls_conf, Config)];
tls_args(ktls_filter_ring, _) -> ["-ktls_filter", "rx_reader", "ring"];
tls_args(_, _) -> [].

%% ------------------------------------------------------------------

%% 200 simulated nodes connect, stay up, answer every tick; the target
%% gets back to its process and descriptor counts once they are gone.
idle_mesh(Config) ->
    T = ?config(target, Config),
    Before = census(T),
    %% (TLS: handshakes take longer, so more time for the ticks)
    Duration = case ?config(tls, Config) of true -> "6"; false -> "4" end,
    R = loadgen(Config, "idle", ["--conns", "200", "--duration", Duration]),
    transport(Config, R),
    Conns = maps:get(<<"connections">>, R),
    ?assertEqual(200, maps:get(<<"peak_up">>, Conns)),
    ?assertEqual(200, maps:get(<<"up_at_end">>, Conns)),
    ?assertEqual(0, maps:get(<<"handshakes_failed">>, Conns)),
    ?assert(maps:get(<<"handshakes_per_s">>, Conns) > 0),
    no_errors(R),
    %% A tick a second each way: every connection answered a few.
    Ticks = maps:get(<<"ticks_received">>, maps:get(<<"messages">>, R)),
    ?assert(Ticks >= 2 * 200, {ticks, Ticks}),
    Target = maps:get(<<"target">>, R),
    ?assert(maps:get(<<"stats_replies">>, Target) >= 1),
    ?assert(maps:get(<<"proc_samples">>, Target) >= 3),
    %% The target saw the 200 processes' worth of connections.
    #{<<"max">> := MaxProcs} = maps:get(<<"vm_process_count">>, Target),
    %% (inet_tcp: one process a connection; ktls_filter: three; the census
    %% itself was one of the processes before.)
    ?assert(MaxProcs >= maps:get(procs, Before) + 190, {MaxProcs, Before}),
    back_to(T, Before).

%% Messages at a fixed rate to the registered echo process: all come back,
%% latency is measured, and the filter (ktls_filter) refuses none of them.
storm_echo(Config) ->
    T = ?config(target, Config),
    Before = census(T),
    Dropped0 = dropped(Config),
    %% Over TLS 100 connections all send (50-200 is what issue 13 asks).
    Conns = case ?config(tls, Config) of true -> "100"; false -> "20" end,
    R = loadgen(Config, "storm", ["--conns", Conns, "--duration", "3", "--rate", "2000",
                                  "--size", "256"]),
    transport(Config, R),
    M = maps:get(<<"messages">>, R),
    Sent = maps:get(<<"sent">>, M),
    %% 2,000/s for 3 s; over TLS the swarm's 100 handshakes share the 2
    %% cores with the target and the rate is met later (a CI run sent fewer
    %% than 4,000).
    MinSent = case ?config(tls, Config) of true -> 2000; false -> 4000 end,
    ?assert(Sent >= MinSent, {sent, Sent}),
    ?assertEqual(Sent, maps:get(<<"echoed">>, M)),
    Lat = maps:get(<<"latency_us">>, M),
    ?assertEqual(Sent, maps:get(<<"count">>, Lat)),
    [P50, P99, P999] = [maps:get(K, Lat) || K <- [<<"p50">>, <<"p99">>, <<"p999">>]],
    ?assert(0 < P50 andalso P50 =< P99 andalso P99 =< P999, Lat),
    ?assert(P50 < 100000, Lat),  % 100 ms: loopback, loose on purpose (2 shared cores)
    no_errors(R),
    ?assertEqual(Dropped0, dropped(Config)),
    back_to(T, Before).

%% Connections closed and replaced at a rate: every replacement handshakes,
%% and nothing is left behind on the target.
churn(Config) ->
    T = ?config(target, Config),
    Before = census(T),
    R = loadgen(Config, "churn", ["--conns", "50", "--duration", "4", "--churn-rate", "40"]),
    Conns = maps:get(<<"connections">>, R),
    Planned = maps:get(<<"planned_disconnects">>, Conns),
    ?assert(Planned >= 100, {planned, Planned}),
    %% Every closed connection was replaced (the last few may still be
    %% connecting when the run ends).
    Ok = maps:get(<<"handshakes_ok">>, Conns),
    ?assert(Ok >= 50 + Planned - 16, {Ok, Planned}),
    ?assertEqual(0, maps:get(<<"handshakes_failed">>, Conns)),
    no_errors(R),
    back_to(T, Before).

%% The files a run leaves: JSON, markdown, timelines.
report_files(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "report_files"),
    _ = loadgen(Config, "storm", ["--conns", "5", "--duration", "2", "--rate", "100",
                                  "--out", Dir]),
    [?assert(filelib:is_regular(filename:join(Dir, F)), F)
     || F <- ["report.json", "report.md", "timeline.tsv", "target_vm.tsv", "target_proc.tsv"]],
    {ok, Md} = file:read_file(filename:join(Dir, "report.md")),
    ?assertNotEqual(nomatch, binary:match(Md, <<"latency p50 / p99 / p999">>)),
    {ok, Tl} = file:read_file(filename:join(Dir, "timeline.tsv")),
    ?assert(length(binary:split(Tl, <<"\n">>, [global, trim])) >= 3).

%% The attack mix among a storm. A ktls_filter target refuses every attack
%% (spawn request and rex call of os:cmd/1 that would create a marker file,
%% {stop, stop} to init): its counters show each one dropped, the rex calls
%% are answered unauthorized, the marker does not exist, the node still
%% runs and every legitimate message is echoed, with a latency close to the
%% first half of the run, which had no attacks. A stock target would run
%% them: the swarm refuses to send it anything but os:cmd("true"), which
%% does run there (the rex calls come back with its result).
attack_mix(Config) ->
    T = ?config(target, Config),
    Before = census(T),
    Marker = filename:join(?config(priv_dir, Config),
                           "attack_ran_" ++ integer_to_list(erlang:unique_integer([positive]))),
    Harmful = ["--attacks", "spawn,rex,init_stop", "--attack-cmd", "touch " ++ Marker],
    Storm = ["--conns", "20", "--duration", "6", "--rate", "1000", "--attack-rate", "20"],
    case carrier(?config(carrier, Config)) of
        ktls ->
            W0 = world(T),
            R = loadgen(Config, "storm", Storm ++ Harmful),
            A = maps:get(<<"attacks">>, R),
            W1 = world(T),
            ct:log("attacks ~p~nworld before ~p~nafter ~p", [A, W0, W1]),
            #{<<"spawn">> := Spawns, <<"rex">> := Rex, <<"init_stop">> := Stops} =
                maps:get(<<"sent">>, A),
            Sent = maps:get(<<"sent_total">>, A),
            ?assert(Sent >= 30 andalso Spawns > 0 andalso Rex > 0 andalso Stops > 0, A),
            ?assertEqual(<<>>, maps:get(<<"blocked">>, A)),
            %% Each attack dropped, nothing else; each spawn request refused.
            Delta = fun(K) -> maps:get(K, W1) - maps:get(K, W0) end,
            ?assertEqual(Sent, Delta(messages_dropped)),
            ?assertEqual(Spawns, Delta(spawn_requests_refused)),
            %% The report read the same counters through the stats helper.
            Target = maps:get(<<"target">>, R),
            ?assertEqual(<<"ktls_filter">>, maps:get(<<"carrier">>, Target)),
            ?assertEqual(Sent, maps:get(<<"filter_messages_dropped">>, Target)),
            %% The rex calls were answered unauthorized (a last one may be in flight).
            Refused = maps:get(<<"answered_refused">>, A),
            ?assert(Refused =< Rex andalso Refused >= Rex - 3, {Refused, Rex}),
            ?assertEqual(0, maps:get(<<"answered_ran">>, A)),
            ?assertNot(filelib:is_file(Marker)),
            ?assertEqual(?config(target_node, Config), ktls_ct_nodes:call(T, erlang, node, [])),
            %% Legitimate traffic: all echoed, latency close to the quiet half.
            M = maps:get(<<"messages">>, R),
            ?assertEqual(maps:get(<<"sent">>, M), maps:get(<<"echoed">>, M)),
            no_errors(R),
            #{<<"p50">> := P50Before} = maps:get(<<"latency_before_us">>, A),
            #{<<"p50">> := P50During, <<"count">> := During} = maps:get(<<"latency_during_us">>, A),
            ?assert(During > 1000, A),
            %% (loose: two shared cores)
            ?assert(P50During =< 3 * P50Before + 2000, {P50Before, P50During});
        _ ->
            %% Not sent: the run stops at the attacks' start (exit 3).
            R = loadgen(Config, "storm", Storm ++ Harmful, 3),
            A = maps:get(<<"attacks">>, R),
            ?assertEqual(0, maps:get(<<"sent_total">>, A)),
            ?assertNotEqual(<<>>, maps:get(<<"blocked">>, A)),
            ?assertNot(filelib:is_file(Marker)),
            %% os:cmd("true") only: sent, and it runs.
            R2 = loadgen(Config, "storm", Storm),
            A2 = maps:get(<<"attacks">>, R2),
            ?assert(maps:get(<<"sent_total">>, A2) >= 30, A2),
            ?assert(maps:get(<<"answered_ran">>, A2) > 0, A2),
            ?assertEqual(0, maps:get(<<"answered_refused">>, A2)),
            ?assertEqual(?config(target_node, Config), ktls_ct_nodes:call(T, erlang, node, []))
    end,
    back_to(T, Before).

world(T) ->
    ktls_ct_nodes:call(T, ktls_filter, world_stats_get, []).

%% ------------------------------------------------------------------

%% Runs the loadgen against this group's target (bounded: its own duration
%% plus a margin), checks its exit status (0 unless given), returns its
%% report.json decoded.
loadgen(Config, Scenario, Args) ->
    loadgen(Config, Scenario, Args, 0).

loadgen(Config, Scenario, Args, ExitStatus) ->
    Dir = case lists:member("--out", Args) of
              true -> lists:nth(length(lists:takewhile(fun(A) -> A =/= "--out" end, Args)) + 2,
                                Args);
              false ->
                  filename:join(?config(priv_dir, Config),
                                Scenario ++ "_" ++ integer_to_list(erlang:unique_integer([positive])))
          end,
    Tls = case ?config(tls, Config) of
              true -> ["--tls", ?config(tls_conf, Config)];
              false -> []
          end,
    Common = ["--port", integer_to_list(?config(port, Config)),
              "--cookie", atom_to_list(ktls_ct_nodes:cookie()),
              "--target-pid", ?config(target_pid, Config), "--no-progress" | Tls],
    OutArgs = case lists:member("--out", Args) of
                  true -> [];
                  false -> ["--out", Dir]
              end,
    Port = open_port({spawn_executable, ?config(loadgen, Config)},
                     [{args, [Scenario | Common ++ OutArgs ++ Args]}, exit_status,
                      stderr_to_stdout, binary]),
    {Status, Output} = collect(Port, 60000, []),
    ct:log("ktls_loadgen ~s ~p: exit ~p~n~s", [Scenario, Args, Status, Output]),
    ?assertEqual(ExitStatus, Status),
    {ok, Json} = file:read_file(filename:join(Dir, "report.json")),
    json_decode(Json).

collect(Port, Ms, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Ms, [D | Acc]);
        {Port, {exit_status, S}} -> {S, lists:reverse(Acc)}
    after Ms ->
            catch port_close(Port),
            {timeout, lists:reverse(Acc)}
    end.

%% TLS groups ran over TLS (1.2 or 1.3, as negotiated), the others did not.
transport(Config, R) ->
    T = maps:get(<<"transport">>, R),
    case ?config(tls, Config) of
        true -> ?assertMatch(<<"TLSv1.", _/binary>>, T);
        false -> ?assertEqual(<<"tcp">>, T)
    end.

no_errors(R) ->
    ?assertEqual({0, #{}}, {maps:get(<<"error_total">>, R), maps:get(<<"errors">>, R)}).

%% What the target holds that a connection adds to. Descriptors are its
%% sockets: the node also opens pipes of its own on first use (the
%% inet_gethost port), which are no connection's.
census(T) ->
    #{conns => length(ktls_ct_nodes:call(T, erlang, nodes, [hidden])),
      procs => ktls_ct_nodes:call(T, erlang, system_info, [process_count]),
      fds => length([L || {ok, "socket:" ++ _ = L} <- fd_links(T)]),
      pids => ktls_ct_nodes:call(T, erlang, processes, [])}.

fd_links(T) ->
    {ok, Fds} = ktls_ct_nodes:call(T, file, list_dir, ["/proc/self/fd"]),
    lists:sort([ktls_ct_nodes:call(T, file, read_link, ["/proc/self/fd/" ++ F]) || F <- Fds]).

%% The loadgen's connections are gone and the target is back to Before
%% (a little slack for processes the node starts on its own).
back_to(T, Before) ->
    Check = fun() ->
                    C = census(T),
                    maps:get(conns, C) =:= 0 andalso
                        maps:get(procs, C) =< maps:get(procs, Before) + 2 andalso
                        maps:get(fds, C) =< maps:get(fds, Before)
            end,
    case ktls_ct_nodes:wait_until(Check, 10000) of
        ok -> ok;
        timeout ->
            Now = census(T),
            %% What the new processes are, to tell a leak from a lazy start.
            New = [{P, ktls_ct_nodes:call(T, erlang, process_info,
                                          [P, [registered_name, initial_call, current_function]])}
                   || P <- maps:get(pids, Now) -- maps:get(pids, Before)],
            ct:fail({target_not_back, maps:remove(pids, Now), maps:remove(pids, Before),
                     {new_processes, New}, fd_links(T)})
    end.

%% Messages the filter dropped, over every control message (ktls_filter).
dropped(Config) ->
    case carrier(?config(carrier, Config)) of
        ktls ->
            W = world(?config(target, Config)),
            lists:sum([maps:get(dropped, C) || C <- maps:values(maps:get(control, W))]);
        _ -> 0
    end.


%% ------------------------------------------------------------------
%% A small JSON decoder (OTP 25 has none): objects as maps with binary
%% keys, arrays as lists, numbers, strings (\uXXXX escapes for ASCII), true,
%% false, null.

-spec json_decode(binary()) -> term().
json_decode(Bin) ->
    {V, Rest} = value(ws(Bin)),
    <<>> = ws(Rest),
    V.

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\n; C =:= $\t; C =:= $\r -> ws(R);
ws(B) -> B.

value(<<${, R/binary>>) -> object(ws(R), #{});
value(<<$[, R/binary>>) -> array(ws(R), []);
value(<<$", R/binary>>) -> string(R, <<>>);
value(<<"true", R/binary>>) -> {true, R};
value(<<"false", R/binary>>) -> {false, R};
value(<<"null", R/binary>>) -> {null, R};
value(B) -> number(B).

object(<<$}, R/binary>>, M) -> {M, R};
object(B, M) ->
    {K, R1} = value(B),
    <<$:, R2/binary>> = ws(R1),
    {V, R3} = value(ws(R2)),
    case ws(R3) of
        <<$,, R4/binary>> -> object(ws(R4), M#{K => V});
        <<$}, R4/binary>> -> {M#{K => V}, R4}
    end.

array(<<$], R/binary>>, Acc) -> {lists:reverse(Acc), R};
array(B, Acc) ->
    {V, R1} = value(B),
    case ws(R1) of
        <<$,, R2/binary>> -> array(ws(R2), [V | Acc]);
        <<$], R2/binary>> -> {lists:reverse([V | Acc]), R2}
    end.

string(<<$", R/binary>>, Acc) -> {Acc, R};
string(<<$\\, $u, H:4/binary, R/binary>>, Acc) ->
    string(R, <<Acc/binary, (binary_to_integer(H, 16))/utf8>>);
string(<<$\\, C, R/binary>>, Acc) ->
    string(R, <<Acc/binary, (case C of $n -> $\n; $t -> $\t; _ -> C end)>>);
string(<<C, R/binary>>, Acc) -> string(R, <<Acc/binary, C>>).

number(B) ->
    {match, [N]} = re:run(B, "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?", [{capture, first, binary}]),
    <<N:(byte_size(N))/binary, R/binary>> = B,
    V = case binary:match(N, [<<".">>, <<"e">>, <<"E">>]) of
            nomatch -> binary_to_integer(N);
            _ -> binary_to_float(normalize_float(N))
        end,
    {V, R}.

%% binary_to_float/1 wants a fraction: 1e5 -> 1.0e5.
normalize_float(N) ->
    case binary:match(N, <<".">>) of
        nomatch -> re:replace(N, "([eE])", ".0\\1", [{return, binary}]);
        _ -> N
    end.
