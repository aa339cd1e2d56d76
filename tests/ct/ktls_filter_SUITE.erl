%% The filter engine on real nodes: a ktls_filter TARGET node and a stock
%% OTP ATTACKER node (-proto_dist inet_tcp, atom cache and fragments as OTP
%% sends them). Handler and logger behaviours, the break-glass switch,
%% monitor mode, statistics, the atom cache across dropped messages, size
%% limits.
-module(ktls_filter_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([exit_signal_to_protected_process_is_dropped/1,
         protected_process_started_later_is_protected/1,
         burst_to_a_new_process_is_looked_up_once/1, handler_decides/1, handler_spawn_request_init/1, logger_gets_events_and_counts_drops/1, break_glass_switch/1,
         monitor_mode_keeps_and_counts/1, monitor_mode_keeps_undecodable_payload/1,
         channel_inspect_reports_state/1,
         atom_cache_survives_dropped_message/1, max_message_size_drops_large_messages/1,
         nif_option_table/1]).
%% run on the nodes
-export([start_echo/0, try_erpc/4, try_spawn_request/4, echo/2, start_collector/0, collected/0, start_logger/0,
         send_many/3, send_raw/2, spawn_reader/0]).
-export([input_of/1, hold/1, release/0, start_counter/0, start_counter_link/0,
         start_system_counter/0, counted/1, burst/2, role_look_ups/0]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [exit_signal_to_protected_process_is_dropped, protected_process_started_later_is_protected,
     burst_to_a_new_process_is_looked_up_once,
     handler_decides, handler_spawn_request_init, logger_gets_events_and_counts_drops,
     break_glass_switch, monitor_mode_keeps_and_counts, monitor_mode_keeps_undecodable_payload,
     channel_inspect_reports_state,
     atom_cache_survives_dropped_message, max_message_size_drops_large_messages,
     nif_option_table].

init_per_testcase(_TC, Config) ->
    Config.

end_per_testcase(_TC, _Config) ->
    ktls_ct_nodes:stop_tracked().

%% Target (ktls_filter, default policy plus Extra) with an echo server, and
%% a connected stock attacker.
start_pair(Extra) ->
    {T, NT} = ktls_ct_nodes:start(ktls_ct_nodes:unique("target"), ktls, Extra),
    ktls_ct_nodes:track(T),
    {A, NA} = ktls_ct_nodes:start(ktls_ct_nodes:unique("attacker"), inet_tcp),
    ktls_ct_nodes:track(A),
    ok = ktls_ct_nodes:call(T, ?MODULE, start_echo, []),
    true = ktls_ct_nodes:call(A, net_kernel, connect_node, [NT]),
    {T, NT, A, NA}.

call(P, F, Args) -> ktls_ct_nodes:call(P, ?MODULE, F, Args).
world(T) -> ktls_ct_nodes:call(T, ktls_filter, world_stats_get, []).

%% ------------------------------------------------------------------
%% Cases
%% ------------------------------------------------------------------

%% exit(Pid, kill) from a remote node to kernel_sup's pid would take the
%% node down; exit and group-leader signals to protected processes are
%% dropped, while the same signals to application processes still work.
exit_signal_to_protected_process_is_dropped(_Config) ->
    {T, NT, A, _} = start_pair([]),
    KernelSup = ktls_ct_nodes:call(T, erlang, whereis, [kernel_sup]),
    Echo = ktls_ct_nodes:call(T, erlang, whereis, [echo]),
    Dropped0 = maps:get(messages_dropped, world(T)),
    true = ktls_ct_nodes:call(A, erlang, exit, [KernelSup, kill]),
    true = ktls_ct_nodes:call(A, erlang, group_leader, [init_of(A), KernelSup]),
    ok = call(A, echo, [NT, still_here]),
    ?assertEqual(KernelSup, ktls_ct_nodes:call(T, erlang, whereis, [kernel_sup])),
    ?assertEqual(Dropped0 + 2, maps:get(messages_dropped, world(T))),
    %% an application process is not protected: the signal reaches it
    true = ktls_ct_nodes:call(A, erlang, exit, [Echo, kill]),
    ok = ktls_ct_nodes:wait_until(
           fun() -> ktls_ct_nodes:call(T, erlang, is_process_alive, [Echo]) =:= false end, 5000),
    [_] = ktls_ct_nodes:call(T, erlang, nodes, []).

%% Protection follows the process, not a list of names resolved from time
%% to time: a system application started after the connection, and a
%% system process restarted under it (a new pid), are protected from the
%% first signal that names their pid. An application process that takes a
%% name OTP's own processes would have is not.
protected_process_started_later_is_protected(_Config) ->
    [protected_later(Extra) || Extra <- readers()],
    ok.

protected_later(Extra) ->
    {T, NT, A, _} = start_pair(Extra),
    ok = call(A, echo, [NT, connected]),
    ok = ktls_ct_nodes:call(T, application, start, [sasl]),
    RH = ktls_ct_nodes:call(T, erlang, whereis, [release_handler]),
    Dropped0 = maps:get(messages_dropped, world(T)),
    true = ktls_ct_nodes:call(A, erlang, exit, [RH, kill]),
    ok = call(A, echo, [NT, still_here]),
    ?assert(ktls_ct_nodes:call(T, erlang, is_process_alive, [RH])),
    ?assertEqual(Dropped0 + 1, maps:get(messages_dropped, world(T))),
    %% restarted by its supervisor: a new pid, protected at once
    ok = ktls_ct_nodes:call(T, supervisor, terminate_child, [sasl_sup, release_handler]),
    {ok, RH2} = ktls_ct_nodes:call(T, supervisor, restart_child, [sasl_sup, release_handler]),
    ?assertNotEqual(RH, RH2),
    true = ktls_ct_nodes:call(A, erlang, exit, [RH2, kill]),
    ok = call(A, echo, [NT, still_here]),
    ?assert(ktls_ct_nodes:call(T, erlang, is_process_alive, [RH2])),
    %% a name is not a protection: an application process named rex_sup
    %% (a name OTP 25 does not use) gets the signal
    Late = ktls_ct_nodes:call(T, erlang, apply, [fun() ->
        P = spawn(fun() -> receive stop -> ok end end),
        true = register(rex_sup, P),
        P
    end, []]),
    true = ktls_ct_nodes:call(A, erlang, exit, [Late, kill]),
    ok = ktls_ct_nodes:wait_until(
           fun() -> not ktls_ct_nodes:call(T, erlang, is_process_alive, [Late]) end, 5000).

%% A process that gets a burst right after it was spawned is looked up once
%% (ktls_filter_roles:role/1 called once), not once per message in flight
%% before the answer reached the filter's cache; every message still waits
%% for that answer. The connection's input process is held while the burst
%% arrives, so every message of it is filtered before the first answer is
%% known. A burst to a system process started a moment ago (a new child of
%% kernel_safe_sup) is refused, every message of it. Both readers.
burst_to_a_new_process_is_looked_up_once(_Config) ->
    [burst_looked_up_once(Extra) || Extra <- readers()],
    ok.

burst_looked_up_once(Extra) ->
    {T, NT, A, NA} = start_pair(Extra),
    ok = call(A, echo, [NT, connected]),
    Input = call(T, input_of, [NA]),
    N = 1000,
    Burst = fun(To) ->
                    W0 = world(T),
                    L0 = call(T, role_look_ups, []),
                    ok = call(T, hold, [Input]),
                    ok = call(A, burst, [To, N]),
                    %% every message filtered (judged), none answered yet
                    ok = ktls_ct_nodes:wait_until(
                           fun() -> maps:get(messages_seen, world(T)) >= maps:get(messages_seen, W0) + N end,
                           10000),
                    ok = call(T, release, []),
                    ok = call(A, echo, [NT, after_burst]),
                    W1 = world(T),
                    {call(T, role_look_ups, []) - L0,
                     maps:get(receivers_looked_up, W1) - maps:get(receivers_looked_up, W0),
                     maps:get(messages_dropped, W1) - maps:get(messages_dropped, W0)}
            end,
    %% an application process: every message delivered, in order
    User = call(T, start_counter, []),
    ?assertEqual({1, 1, 0}, Burst(User)),
    ?assertEqual({N, in_order}, call(T, counted, [User])),
    %% a system process: every message refused
    System = call(T, start_system_counter, []),
    ?assertEqual({1, 1, N}, Burst(System)),
    ?assertEqual({0, in_order}, call(T, counted, [System])),
    ?assertEqual(system, ktls_ct_nodes:call(T, ktls_filter_roles, role, [System])).

%% init's pid on node P: a process of the attacker to name as group leader.
init_of(P) -> ktls_ct_nodes:call(P, erlang, whereis, [init]).

%% Unsafe messages go to the configured handler, in order with the
%% traffic: keep runs the spawn, drop refuses it, a crash counts as drop.
handler_decides(_Config) ->
    {T, NT, A, _} = start_pair(["-ktls_filter", "handler", "ktls_ct_handler"]),
    OsPid = ktls_ct_nodes:call(T, os, getpid, []),
    ?assertEqual({ok, OsPid}, call(A, try_erpc, [NT, os, getpid, []])),
    ?assertEqual({exit, {exception, unauthorized}}, call(A, try_erpc, [NT, os, cmd, ["true"]])),
    ?assertEqual({exit, {exception, unauthorized}},
                 call(A, try_erpc, [NT, erlang, error, [crash_me]])),
    ok = call(A, echo, [NT, still_here]),
    W = world(T),
    ?assertEqual(3, maps:get(handler_asked, W)),
    #{seen := 3, kept := 1, dropped := 2} = maps:get(spawn_request, maps:get(control, W)).

%% A handler that exports spawn_request_init/4 gets every unsafe spawn
%% request in the spawned process: it runs the allowed erpc call, refuses
%% the rest, and callers get answers (a result, {exception, unauthorized},
%% a DOWN with the exit reason), never a hang.
handler_spawn_request_init(_Config) ->
    {T, NT, A, _} = start_pair(["-ktls_filter", "handler", "ktls_ct_init_handler"]),
    OsPid = ktls_ct_nodes:call(T, os, getpid, []),
    ?assertEqual({ok, OsPid}, call(A, try_erpc, [NT, os, getpid, []])),
    ?assertEqual({exit, {exception, unauthorized}}, call(A, try_erpc, [NT, os, cmd, ["true"]])),
    ?assertEqual({down, unauthorized},
                 call(A, try_spawn_request, [NT, os, putenv, ["KTLS_X", "1"]])),
    ?assertEqual(false, ktls_ct_nodes:call(T, os, getenv, ["KTLS_X"])),
    ok = call(A, echo, [NT, still_here]),
    W = world(T),
    ?assertEqual(3, maps:get(spawn_requests_redirected, W)),
    ?assertEqual(0, maps:get(handler_asked, W)).

%% A logger sees decoded messages in batches; with capacity 1 and a slow
%% logger the events that do not fit are dropped and counted, and traffic
%% is not slowed down by it.
logger_gets_events_and_counts_drops(_Config) ->
    [logger_events(Extra) || Extra <- readers()],
    ok.

%% Node arguments for both readers of a connection: a receive port (on a
%% scheduler) and the carrier thread.
readers() -> [[], ["-ktls_filter", "rx_reader", "ring"]].

logger_events(Extra) ->
    {T, NT, A, _} = start_pair(Extra),
    ok = call(T, start_collector, []),
    ok = call(T, start_logger, []),
    ok = call(A, echo, [NT, {marker, <<"logged payload">>}]),
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   lists:any(fun({event, _, _, {_, {marker, <<"logged payload">>}}}) -> true;
                                (_) -> false
                             end, call(T, collected, []))
           end, 5000),
    %% Events carry the wall-clock time in microseconds (the carrier thread
    %% stamped them before 1970 once).
    Now = ktls_ct_nodes:call(T, erlang, system_time, [microsecond]),
    Times = [Time || {event_time, Time} <- call(T, collected, [])],
    ?assertNotEqual([], Times),
    [?assert(abs(Now - Time) < 60000000) || Time <- Times],
    [#{events := E0, pid := LPid} = Entry] = ktls_ct_nodes:call(T, ktls_filter, logger_list, []),
    ?assert(E0 > 0),
    %% logger_inspect/1 takes what logger_list/0 gives, or its pid.
    #{pid := LPid} = ktls_ct_nodes:call(T, ktls_filter, logger_inspect, [Entry]),
    #{pid := LPid} = ktls_ct_nodes:call(T, ktls_filter, logger_inspect, [LPid]),
    ok = ktls_ct_nodes:call(T, ktls_filter, logger_set_capacity, [1]),
    ktls_ct_nodes:call(T, erlang, send, [ktls_ct_logger_1, {delay, 200}]),
    ok = call(A, send_many, [NT, 2000, burst]),
    ok = call(A, echo, [NT, after_burst]),
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   [#{dropped := D}] = ktls_ct_nodes:call(T, ktls_filter, logger_list, []),
                   D > 0
           end, 5000),
    ok = ktls_ct_nodes:call(T, ktls_filter, logger_set_capacity, [0]).

%% Break glass: inspection off lets everything through (counted); back on,
%% the policy applies again. Every switch is counted.
break_glass_switch(_Config) ->
    {T, NT, A, _} = start_pair([]),
    ?assertEqual({exit, {exception, unauthorized}}, call(A, try_erpc, [NT, os, getpid, []])),
    ok = ktls_ct_nodes:call(T, ktls_filter, config_set, [deep_packet_inspection, false]),
    {ok, _} = call(A, try_erpc, [NT, os, getpid, []]),
    W1 = world(T),
    ?assert(maps:get(uninspected, W1) > 0),
    ?assertEqual(false, maps:get(deep_packet_inspection, W1)),
    ok = ktls_ct_nodes:call(T, ktls_filter, config_set, [deep_packet_inspection, true]),
    ?assertEqual({exit, {exception, unauthorized}}, call(A, try_erpc, [NT, os, getpid, []])),
    ok = call(A, echo, [NT, still_connected]),
    ?assertEqual(2, maps:get(deep_packet_inspection_switches, world(T))).

%% Monitor mode keeps what enforce would drop, and counts it.
monitor_mode_keeps_and_counts(_Config) ->
    {T, NT, A, _} = start_pair(["-ktls_filter", "filter_mode", "monitor"]),
    {ok, _} = call(A, try_erpc, [NT, os, getpid, []]),
    ?assert(maps:get(would_drop, world(T)) >= 1),
    ok = ktls_ct_nodes:call(T, ktls_filter, config_set, [filter_mode, enforce]),
    ?assertEqual({exit, {exception, unauthorized}}, call(A, try_erpc, [NT, os, getpid, []])).

%% OTP decodes the payload of a message when its receiver reads it and only
%% then takes the connection down (kill_connection: nodedown reason
%% killed); until then the connection and the rest of the queue go on
%% (distribution_SUITE:bad_dist_ext_*). Monitor mode leaves that to the VM:
%% a SEND whose payload does not decode (an atom cache reference the header
%% does not have) is kept and counted; enforce mode closes at once.
monitor_mode_keeps_undecodable_payload(_Config) ->
    {T, NT, A, NA} = start_pair(["-ktls_filter", "filter_mode", "monitor"]),
    Reader = call(T, spawn_reader, []),
    ok = call(T, hold, [Reader]),
    WouldDrop0 = maps:get(would_drop, world(T)),
    Bad = [<<131, $D, 0>>, term_body({2, '', Reader}), <<$R, 137>>],
    Good = [<<131, $D, 0>>, term_body({2, '', Reader}), term_body(after_the_bad_one)],
    ok = call(A, send_raw, [NT, Bad]),
    ok = call(A, send_raw, [NT, Good]),
    ok = call(A, echo, [NT, still_connected]),
    ?assertEqual({message_queue_len, 2},
                 ktls_ct_nodes:call(T, erlang, process_info, [Reader, message_queue_len])),
    ?assertEqual([NA], ktls_ct_nodes:call(T, erlang, nodes, [])),
    ?assertEqual(WouldDrop0 + 1, maps:get(would_drop, world(T))),
    %% the reader reads it: the VM kills the connection, as without the filter
    ok = call(T, release, []),
    ok = ktls_ct_nodes:wait_until(
           fun() -> ktls_ct_nodes:call(T, erlang, nodes, []) =:= [] end, 5000).

term_body(Term) ->
    <<131, Body/binary>> = term_to_binary(Term),
    Body.

%% Writes Packet on the dist connection with Node as one dist packet (the
%% dist port of a stock inet_tcp node).
send_raw(Node, Packet) ->
    {Node, Port} = lists:keyfind(Node, 1, erlang:system_info(dist_ctrl)),
    true = erlang:port_command(Port, Packet),
    ok.

%% A process that reads its messages one by one.
spawn_reader() ->
    spawn(fun Loop() -> receive _ -> Loop() end end).

%% channel_list/channel_inspect: node, framing, the receiving atom cache,
%% counters per control message.
channel_inspect_reports_state(_Config) ->
    {T, _NT, A, NA} = start_pair([]),
    ok = call(A, echo, [node_of(T), {hello, world}]),
    [{NA, Conn}] = ktls_ct_nodes:call(T, ktls_filter, channel_list, []),
    NA = ktls_ct_nodes:call(T, ktls_filter_nif, channel_node, [Conn]),
    I = ktls_ct_nodes:call(T, ktls_filter, channel_inspect, [NA]),
    ct:pal("channel_inspect: ~p", [I]),
    #{node := NA, flags := #{framing := header}, rx_atom_cache := Cache,
      filter := #{control := #{reg_send := #{seen := Seen, kept := Seen}}, bytes := Bytes}} = I,
    ?assert(Seen >= 1),
    ?assert(Bytes > 0),
    ?assert(lists:keymember(<<"echo">>, 2, Cache)).

%% A dropped message whose header creates atom cache entries still
%% delivers those entries: the next message refers to them by index only.
atom_cache_survives_dropped_message(_Config) ->
    {T, NT, A, _} = start_pair([]),
    Dropped0 = maps:get(messages_dropped, world(T)),
    Atoms = {ktls_fresh_atom_one, ktls_fresh_atom_two},
    %% kernel_sup is protected: dropped, but its header carries the atoms
    Atoms = ktls_ct_nodes:call(A, erlang, send, [{kernel_sup, NT}, Atoms]),
    ok = call(A, echo, [NT, Atoms]),
    ?assertEqual(Dropped0 + 1, maps:get(messages_dropped, world(T))),
    %% the connection never dropped
    [_] = ktls_ct_nodes:call(T, erlang, nodes, []).

%% Messages over max_message_size (here 1 MiB) are dropped while they
%% arrive (fragments are not kept); smaller ones pass on the same channel.
max_message_size_drops_large_messages(_Config) ->
    {T, NT, A, _} = start_pair(["-ktls_filter", "max_message_size", "1048576"]),
    Big = binary:copy(<<7>>, 4 * 1024 * 1024),
    timeout = call(A, echo, [NT, Big]),
    ok = call(A, echo, [NT, binary:copy(<<8>>, 512 * 1024)]),
    W = world(T),
    ?assertEqual(1, maps:get(too_large, W)),
    ?assert(ktls_ct_nodes:call(T, erlang, memory, [total]) < 200 * 1024 * 1024).

node_of(P) -> ktls_ct_nodes:call(P, erlang, node, []).

%% ------------------------------------------------------------------
%% On the nodes
%% ------------------------------------------------------------------

start_echo() ->
    Pid = spawn(fun Loop() ->
                        receive
                            {From, Msg} -> From ! {echo, Msg}, Loop()
                        end
                end),
    true = register(echo, Pid),
    ok.

try_erpc(Node, M, F, A) ->
    try {ok, erpc:call(Node, M, F, A, 5000)}
    catch Class:Reason -> {Class, Reason}
    end.

try_spawn_request(Node, M, F, A) ->
    Ref = erlang:spawn_request(Node, M, F, A, [monitor]),
    receive
        {spawn_reply, Ref, ok, _Pid} ->
            receive {'DOWN', Ref, process, _, Reason} -> {down, Reason}
            after 5000 -> no_down
            end;
        {spawn_reply, Ref, error, Reason} ->
            {error, Reason}
    after 5000 -> no_reply
    end.

echo(Node, Msg) ->
    {echo, Node} ! {self(), Msg},
    receive
        {echo, Msg} -> ok
    after 3000 -> timeout
    end.

send_many(Node, N, Msg) ->
    [{echo, Node} ! {self(), Msg} || _ <- lists:seq(1, N)],
    [receive {echo, Msg} -> ok after 5000 -> error(timeout) end || _ <- lists:seq(1, N)],
    ok.

%% The input process of the connection with Node.
input_of(Node) ->
    {Node, Ctrl} = lists:keyfind(Node, 1, erlang:system_info(dist_ctrl)),
    {links, Links} = process_info(Ctrl, links),
    [Input] = [P || P <- Links, is_pid(P), node(P) =:= node(),
                    process_info(P, initial_call) =:=
                        {initial_call, {ktls_filter_dist_ctrl, input_init, 4}}],
    Input.

%% Suspends Pid until release/0 (a suspension lasts as long as the process
%% that made it).
hold(Pid) ->
    Self = self(),
    H = spawn(fun() ->
                      true = erlang:suspend_process(Pid),
                      Self ! {held, self()},
                      receive {release, From} -> From ! released end
              end),
    register(ktls_ct_holder, H),
    receive {held, H} -> ok end.

release() ->
    ktls_ct_holder ! {release, self()},
    receive released -> ok end.

%% Calls of ktls_filter_roles:role/1 so far (counted from the first call of
%% this function on).
role_look_ups() ->
    case erlang:trace_info({ktls_filter_roles, role, 1}, call_count) of
        {call_count, C} when is_integer(C) ->
            C;
        _ ->
            _ = erlang:trace_pattern({ktls_filter_roles, role, 1}, true, [call_count]),
            0
    end.

%% A process that counts {burst, I} messages and checks their order.
start_counter() ->
    spawn(fun() -> counter(0, in_order) end).

start_counter_link() ->
    {ok, spawn_link(fun() -> counter(0, in_order) end)}.

%% A new child of kernel_safe_sup: a process of kernel, a system process.
start_system_counter() ->
    {ok, Pid} = supervisor:start_child(
                  kernel_safe_sup, #{id => {ktls_ct_counter, erlang:unique_integer()},
                                     start => {?MODULE, start_counter_link, []}}),
    Pid.

counter(N, Order) ->
    receive
        {burst, I} when I =:= N + 1 -> counter(I, Order);
        {burst, I} -> counter(I, {out_of_order, N, I});
        {counted, From} -> From ! {counted, self(), N, Order}, counter(N, Order)
    end.

counted(Pid) ->
    Pid ! {counted, self()},
    receive {counted, Pid, N, Order} -> {N, Order} after 5000 -> timeout end.

burst(To, N) ->
    [To ! {burst, I} || I <- lists:seq(1, N)],
    ok.

start_collector() ->
    Pid = spawn(fun() -> collect([]) end),
    true = register(ktls_ct_collector, Pid),
    ok.

collect(Acc) ->
    receive
        {get, From} -> From ! {collected, lists:reverse(Acc)}, collect(Acc);
        Msg when length(Acc) < 10000 -> collect([Msg | Acc]);
        _ -> collect(Acc)
    end.

collected() ->
    ktls_ct_collector ! {get, self()},
    receive {collected, L} -> L after 2000 -> [] end.

start_logger() ->
    {ok, Pid} = ktls_filter_logger:start_link(ktls_ct_logger, [], 1),
    unlink(Pid),
    ok.

%% The Erlang table (ktls_filter_config:options/0) is the one source of
%% option values: the NIF reads every option it uses through one table
%% (nif/options.cc), each must be in the Erlang table (or be computed by
%% ktls_filter_config), the C++ structures' own defaults agree with the
%% Erlang ones, and a map without one of the NIF's keys is refused with
%% the key named instead of falling back to a C++ default.
nif_option_table(_Config) ->
    {T, _} = ktls_ct_nodes:start(ktls_ct_nodes:unique("options"), ktls, []),
    ktls_ct_nodes:track(T),
    Nif = ktls_ct_nodes:call(T, ktls_filter_nif, option_table, []),
    Erl = maps:from_list([{K, D} || {K, _, D, _} <- ktls_filter_config:options()]),
    ?assert(length(Nif) >= 20),
    Derived = [handler_spawn_init],
    [begin
         ?assert(lists:member(G, [carrier, filter])),
         case lists:member(K, Derived) of
             true -> ?assertEqual({K, derived}, {K, CxxDefault});
             false -> ?assertEqual({K, maps:get(K, Erl, not_in_the_erlang_table)}, {K, CxxDefault})
         end
     end || {K, G, CxxDefault} <- Nif],
    %% Every filter option of the table reaches the NIF through the reader.
    FilterKeys = [K || {K, filter, _} <- Nif],
    Config = ktls_ct_nodes:call(T, ktls_filter_config, get, []),
    Full = ktls_ct_nodes:call(T, ktls_filter_config, filter_options, [Config]),
    ok = ktls_ct_nodes:call(T, ktls_filter_nif, filter_configure, [Full]),
    [?assertMatch({K, {error, {bad_option, K, <<"missing", _/binary>>}}},
                  {K, ktls_ct_nodes:call(T, ktls_filter_nif, filter_configure,
                                         [maps:remove(K, Full)])})
     || K <- FilterKeys],
    ?assertMatch({error, {bad_option, max_open_fragments, <<"not an integer in 1..", _/binary>>}},
                 ktls_ct_nodes:call(T, ktls_filter_nif, filter_configure,
                                    [Full#{max_open_fragments => 0}])),
    ?assertMatch({error, {bad_option, filter_mode, <<"not one of enforce monitor off">>}},
                 ktls_ct_nodes:call(T, ktls_filter_nif, filter_configure,
                                    [Full#{filter_mode => loud}])),
    %% The carrier options too (the carrier is running: start/1 checks the
    %% map first).
    Carrier = ktls_ct_nodes:call(T, ktls_filter_config, carrier_options, [Config]),
    ok = ktls_ct_nodes:call(T, ktls_filter_nif, start, [Carrier]),
    [?assertMatch({K, {error, {bad_option, K, <<"missing", _/binary>>}}},
                  {K, ktls_ct_nodes:call(T, ktls_filter_nif, start, [maps:remove(K, Carrier)])})
     || {K, carrier, _} <- Nif],
    %% Still the configuration in force.
    ?assertEqual(Config, ktls_ct_nodes:call(T, ktls_filter, config_get, [])).
