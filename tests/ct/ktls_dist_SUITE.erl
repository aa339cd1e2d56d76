%% Multi-node tests of -proto_dist ktls_filter in plain mode: real OTP 25
%% nodes on 127.0.0.1, real sockets, stock inet_tcp_dist peers.
-module(ktls_dist_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([ping_both_ways/1, rpc_and_erpc/1, links_and_monitors/1, message_64mib/1,
         small_messages_in_order/1, nodedown_on_kill/1, reconnect_after_restart/1,
         interop_inet_tcp_ktls_connects/1, interop_inet_tcp_peer_connects/1,
         epmdless/1, remsh_without_epmd/1, config_error_names_option/1,
         bad_options_stop_the_node/1, ktls_filter_port_with_epmd/1,
         stats_and_getstat/1, pool_buffers_return_after_release/1,
         rx_port_reads_and_pauses/1, rx_reader_ring/1, setopts_getopts/1,
         inet_dist_options/1, one_lifecycle/1,
         disconnect_closes_with_the_supervisor/1, last_messages_before_a_close_arrive/1,
         global_prevents_overlapping_partitions/1]).
%% run on the nodes
-export([kill_supervisor_of_held_controller/1, hold_input/1, count/0, count_of/0,
         send_burst/2]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [ping_both_ways, rpc_and_erpc, links_and_monitors, message_64mib, small_messages_in_order,
     nodedown_on_kill, reconnect_after_restart, interop_inet_tcp_ktls_connects,
     interop_inet_tcp_peer_connects, epmdless, remsh_without_epmd, config_error_names_option,
     bad_options_stop_the_node, ktls_filter_port_with_epmd,
     stats_and_getstat, pool_buffers_return_after_release, rx_port_reads_and_pauses,
     rx_reader_ring, setopts_getopts, inet_dist_options, one_lifecycle,
     disconnect_closes_with_the_supervisor, last_messages_before_a_close_arrive,
     global_prevents_overlapping_partitions].

init_per_testcase(_TC, Config) ->
    Config.

end_per_testcase(_TC, _Config) ->
    ktls_ct_nodes:stop_tracked().

start(Name, Carrier) -> start(Name, Carrier, []).
start(Name, Carrier, Extra) ->
    {P, N} = ktls_ct_nodes:start(ktls_ct_nodes:unique(Name), Carrier, allow() ++ Extra),
    ktls_ct_nodes:track(P),
    {P, N}.

%% These cases test the carrier, not the policy: they run the suite's funs
%% and a few library functions on peers over dist (and a remote shell), so
%% the filter's default policy is opened for exactly those.
allow() ->
    ktls_ct_nodes:allow_mfa_args([{?MODULE, '_', '_'}, {lists, '_', '_'},
                                  {crypto, strong_rand_bytes, 1}, {shell, start, '_'},
                                  {edlin_expand, expand, '_'}]).

call(P, M, F, A) -> ktls_ct_nodes:call(P, M, F, A).
call(P, M, F, A, Timeout) -> ktls_ct_nodes:call(P, M, F, A, Timeout).

%% ------------------------------------------------------------------

ping_both_ways(_Config) ->
    {A, NA} = start("a", ktls),
    {B, NB} = start("b", ktls),
    pong = call(A, net_adm, ping, [NB]),
    [NB] = call(A, erlang, nodes, []),
    [NA] = call(B, erlang, nodes, []),
    %% the connection really runs on our carrier
    [_ | _] = call(A, ktls_filter, connections, []),
    pong = call(B, net_adm, ping, [NA]),
    ok.

rpc_and_erpc(_Config) ->
    {A, _} = start("a", ktls),
    {_B, NB} = start("b", ktls),
    NB = call(A, rpc, call, [NB, erlang, node, []]),
    [1, 2, 3] = call(A, erpc, call, [NB, lists, seq, [1, 3]]),
    Big = lists:seq(1, 100000),
    Big = call(A, erpc, call, [NB, lists, reverse, [lists:reverse(Big)]]),
    ok.

links_and_monitors(_Config) ->
    {A, _} = start("a", ktls),
    {_B, NB} = start("b", ktls),
    Result = call(A, erlang, apply, [fun() ->
        process_flag(trap_exit, true),
        Pid = spawn_link(NB, fun() -> receive stop -> exit(bye) end end),
        Ref = monitor(process, Pid),
        NB = node(Pid),
        Pid ! stop,
        Down = receive {'DOWN', Ref, process, Pid, R1} -> R1 after 5000 -> timeout end,
        Exit = receive {'EXIT', Pid, R2} -> R2 after 5000 -> timeout end,
        %% monitor of a registered name on the other node
        Ref2 = monitor(process, {net_kernel, NB}),
        true = demonitor(Ref2),
        {Down, Exit}
    end, []]),
    {bye, bye} = Result,
    ok.

message_64mib(_Config) ->
    {A, _} = start("a", ktls),
    {_B, NB} = start("b", ktls),
    Size = 64 * 1024 * 1024,
    {same, Size} = call(A, erlang, apply, [fun() ->
        Bin = crypto:strong_rand_bytes(Size),
        Self = self(),
        P = spawn(NB, fun() -> receive {From, B} -> From ! {byte_size(B), erlang:md5(B)} end end),
        P ! {Self, Bin},
        Expected = {Size, erlang:md5(Bin)},
        receive
            Expected -> {same, Size};
            Other -> {different, Other}
        after 60000 -> timeout
        end
    end, []], 120000),
    ok.

small_messages_in_order(_Config) ->
    {A, _} = start("a", ktls),
    {_B, NB} = start("b", ktls),
    N = 100000,
    {ok, N} = call(A, erlang, apply, [fun() ->
        Self = self(),
        P = spawn(NB, fun Loop() -> Recv = fun R(I) when I > N -> {ok, N};
                                               R(I) -> receive {seq, I} -> R(I + 1);
                                                               {seq, J} -> {out_of_order, I, J}
                                                       after 30000 -> {timeout, I} end
                                           end,
                                    Self ! {done, Recv(1)}, _ = Loop end),
        [P ! {seq, I} || I <- lists:seq(1, N)],
        receive {done, R} -> R after 60000 -> timeout end
    end, []], 120000),
    ok.

%% OTP 25's global (prevent_overlapping_partitions, on by default): when a
%% drops b, global on a asks the node still connected to both (c) to drop
%% one side with {remove_connection, Node}, which the default policy must
%% let through; as with stock nodes, no node stays connected to both sides.
global_prevents_overlapping_partitions(_Config) ->
    Mesh = ["-kernel", "connect_all", "true"],
    {A, _} = start("a", ktls, Mesh),
    {B, NB} = start("b", ktls, Mesh),
    {C, NC} = start("c", ktls, Mesh),
    pong = call(A, net_adm, ping, [NB]),
    pong = call(A, net_adm, ping, [NC]),
    ok = ktls_ct_nodes:wait_until(
           fun() -> lists:member(NC, call(B, erlang, nodes, [])) end, 10000),
    true = call(A, erlang, disconnect_node, [NB]),
    Overlap = fun() ->
                      Seen = call(C, erlang, nodes, []),
                      lists:member(NB, Seen) andalso
                          lists:member(node_of(A), Seen) andalso
                          not lists:member(NB, call(A, erlang, nodes, []))
              end,
    ok = ktls_ct_nodes:wait_until(fun() -> not Overlap() end, 10000),
    ct:log("a ~p~nb ~p~nc ~p", [call(P, erlang, nodes, []) || P <- [A, B, C]]),
    ok.

node_of(P) -> call(P, erlang, node, []).

nodedown_on_kill(_Config) ->
    {A, _} = start("a", ktls, ["-kernel", "net_ticktime", "4"]),
    {B, NB} = start("b", ktls, ["-kernel", "net_ticktime", "4"]),
    pong = call(A, net_adm, ping, [NB]),
    OsPid = ktls_ct_nodes:os_pid(B),
    %% A watcher process on A measures the nodedown delay (the test runner is
    %% not a dist node, so everything it needs is asked for with peer:call).
    ok = call(A, erlang, apply, [fun() ->
        P = spawn(fun() ->
                          ok = net_kernel:monitor_nodes(true, [nodedown_reason]),
                          receive {go, T0} -> ok end,
                          R = receive
                                  %% OTP's reason atom, as with inet_tcp
                                  {nodedown, NB, [{nodedown_reason, connection_closed}]} ->
                                      {nodedown, erlang:monotonic_time(millisecond) - T0};
                                  {nodedown, NB, Info} ->
                                      {wrong_reason, Info}
                              after 10000 -> no_nodedown
                              end,
                          receive {get, From} -> From ! {result, R} end
                  end),
        true = register(ktls_ct_watcher, P),
        ok
    end, []]),
    timer:sleep(200),
    ok = call(A, erlang, apply, [fun() -> ktls_ct_watcher ! {go, erlang:monotonic_time(millisecond)}, ok end, []]),
    os:cmd("kill -9 " ++ OsPid),
    {nodedown, Elapsed} = call(A, erlang, apply, [fun() ->
        ktls_ct_watcher ! {get, self()},
        receive {result, R} -> R after 15000 -> no_answer end
    end, []]),
    ct:pal("nodedown after ~p ms", [Elapsed]),
    true = Elapsed < 5000,  % within net_ticktime
    [] = call(A, erlang, nodes, []),
    ok.

reconnect_after_restart(_Config) ->
    {A, _} = start("a", ktls),
    Name = ktls_ct_nodes:unique("b"),
    {B, NB} = ktls_ct_nodes:start(Name, ktls),
    pong = call(A, net_adm, ping, [NB]),
    ktls_ct_nodes:stop(B),
    ok = ktls_ct_nodes:wait_until(fun() -> call(A, erlang, nodes, []) =:= [] end, 10000),
    {B2, NB} = ktls_ct_nodes:start(Name, ktls),
    ktls_ct_nodes:track(B2),
    pong = call(A, net_adm, ping, [NB]),
    NB = call(A, erpc, call, [NB, erlang, node, []]),
    ok.

interop_inet_tcp_ktls_connects(_Config) ->
    {A, NA} = start("a", ktls),
    {C, NC} = start("c", inet_tcp),
    pong = call(A, net_adm, ping, [NC]),
    NC = call(A, erpc, call, [NC, erlang, node, []]),
    NA = call(C, erpc, call, [NA, erlang, node, []]),
    Bin = binary:copy(<<"x">>, 1024 * 1024),
    Bin = call(A, erpc, call, [NC, erlang, binary_to_term, [term_to_binary(Bin)]]),
    ok.

interop_inet_tcp_peer_connects(_Config) ->
    {_A, NA} = start("a", ktls),
    {C, _NC} = start("c", inet_tcp),
    pong = call(C, net_adm, ping, [NA]),
    NA = call(C, erpc, call, [NA, erlang, node, []]),
    Big = lists:seq(1, 50000),
    Big = call(C, erpc, call, [NA, lists, reverse, [lists:reverse(Big)]]),
    ok.

epmdless(_Config) ->
    Port = ktls_ct_nodes:free_port(),
    DName = ktls_ct_nodes:unique("d"),
    DNode = list_to_atom(DName ++ "@127.0.0.1"),
    {_D, DNode} = start_named(DName, epmdless, ["-ktls_filter_port", integer_to_list(Port)]),
    {E, _} = start("e", epmdless, ["-ktls_filter_peer", atom_to_list(DNode),
                                   integer_to_list(Port)]),
    pong = call(E, net_adm, ping, [DNode]),
    DNode = call(E, erpc, call, [DNode, erlang, node, []]),
    ok.

remsh_without_epmd(_Config) ->
    Port = ktls_ct_nodes:free_port(),
    DName = ktls_ct_nodes:unique("d"),
    DNode = list_to_atom(DName ++ "@127.0.0.1"),
    {D, DNode} = start_named(DName, epmdless, ["-ktls_filter_port", integer_to_list(Port)]),
    ok = call(D, persistent_term, put, [ktls_remsh_marker, remsh_marker_value]),
    Out = ktls_ct_nodes:remsh(DNode, Port, ""),
    ct:pal("remsh output:~n~ts", [Out]),
    Expect = io_lib:format("MARK:~p:remsh_marker_value", [DNode]),
    ?assertNotEqual(nomatch, string:find(Out, lists:flatten(Expect))),
    %% the target node survived the remote shell's q() (it quits the shell only)
    DNode = call(D, erlang, node, []),
    ok.

config_error_names_option(_Config) ->
    {Out, false} = boot(["-ktls_filter bogus_option 1"]),
    ?assertNotEqual(nomatch, string:find(Out, "bogus_option")),
    ok.

%% Each bad option stops the node at start, with a message that names the
%% option and the value (issue 12's list).
bad_options_stop_the_node(_Config) ->
    {ok, Held} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, HeldPort} = inet:port(Held),
    Busy = integer_to_list(HeldPort),
    Epmdless = "-epmd_module ktls_filter_epmd -start_epmd false",
    Cases =
        [{"-ktls_filter buffer_size -5",
          ["-ktls_filter buffer_size: no value", "-5"]},
         {"-ktls_filter handler no_such_module",
          ["option handler: no_such_module cannot be loaded"]},
         {"-ktls_filter handler lists",
          ["option handler: lists does not export classify/3"]},
         {Epmdless ++ " -ktls_filter_peer x@127.0.0.1",
          ["-ktls_filter_peer x@127.0.0.1: expected -ktls_filter_peer NAME@HOST PORT"]},
         {Epmdless ++ " -ktls_filter_peer x@h notaport",
          ["-ktls_filter_peer x@h notaport: notaport is not a port number"]},
         {Epmdless ++ " -ktls_filter_peer nohost 4000",
          ["nohost is not a node name NAME@HOST"]},
         {"-ktls_filter_peer x@h 4000",
          ["-ktls_filter_peer: read by -epmd_module ktls_filter_epmd only", "erl_epmd"]},
         {"-ktls_filter_port abc", ["-ktls_filter_port abc: not a port number"]},
         {"-ktls_filter_port 4370 -ktls_filter listen_port 4371",
          ["-ktls_filter_port 4370 and the listen_port option 4371 disagree"]},
         {"-ktls_filter listen_ip 10.9.9.9",
          ["-ktls_filter listen_ip 10.9.9.9: 10.9.9.9 is not an Erlang term"]},
         {"-ktls_filter listen_ip '{127,0,0,1}' -ktls_filter listen_port " ++ Busy,
          ["eaddrinuse", "cannot listen on 127.0.0.1, port " ++ Busy,
           "port from the listen_port option"]},
         {"-ktls_filter_port " ++ Busy ++ " -kernel inet_dist_use_interface '{127,0,0,1}'",
          ["eaddrinuse", "cannot listen on 127.0.0.1, port " ++ Busy,
           "port from -ktls_filter_port", "inet_dist_use_interface"]},
         {"-ktls_filter listen_ip '{10,9,9,9}'",
          ["eaddrnotavail", "cannot listen on 10.9.9.9", "address from the listen_ip option"]}],
    Failed = [{Args, Out} || {Args, Expect} <- Cases,
                             {Out, Started} <- [boot([Args])],
                             Started orelse
                                 lists:any(fun(E) -> string:find(Out, E) =:= nomatch end, Expect)],
    gen_tcp:close(Held),
    ?assertEqual([], Failed),
    ok.

%% -ktls_filter_port without ktls_filter_epmd is the listen port all the
%% same (registered with epmd).
ktls_filter_port_with_epmd(_Config) ->
    Port = ktls_ct_nodes:free_port(),
    Name = ktls_ct_nodes:unique("p"),
    {_P, _} = start_named(Name, ktls, ["-ktls_filter_port", integer_to_list(Port)]),
    {port, Port, _} = erl_epmd:port_please(Name, {127, 0, 0, 1}),
    ok.

%% Starts `./ktls erl' with Args: its output and whether it got as far as
%% running its -eval (the node started).
boot(Args) ->
    Ktls = filename:join(ktls_ct_nodes:root(), "ktls"),
    Out = os:cmd("ERL_CRASH_DUMP_SECONDS=0 timeout 60 " ++ Ktls ++ " erl -name " ++
                     ktls_ct_nodes:unique("cfg") ++ "@127.0.0.1 -noshell " ++
                     lists:join(" ", Args) ++
                     " -eval 'io:format(\"NODE_STARTED~n\"), halt()' 2>&1"),
    ct:pal("~ts:~n~ts", [lists:join(" ", Args), Out]),
    {Out, string:find(Out, "NODE_STARTED") =/= nomatch}.

stats_and_getstat(_Config) ->
    {A, _} = start("a", ktls),
    {_B, NB} = start("b", ktls),
    pong = call(A, net_adm, ping, [NB]),
    [Info] = call(A, ktls_filter, connections, []),
    #{stats := #{packets_in := In, packets_out := Out}} = Info,
    true = In > 0 andalso Out > 0,
    #{connections_open := 1} = call(A, ktls_filter, carrier_stats, []),
    {ok, [{NB, NodeInfo}]} = call(A, net_kernel, nodes_info, []),
    {address, _} = lists:keyfind(address, 1, NodeInfo),
    %% connection_info by node name, dist controller and id
    #{id := Id, peer := Peer} = call(A, ktls_filter, connection_info, [NB]),
    [{NB, Ctrl}] = call(A, erlang, system_info, [dist_ctrl]),
    true = is_pid(Ctrl),
    #{id := Id} = call(A, ktls_filter, connection_info, [Ctrl]),
    #{id := Id} = call(A, ktls_filter, connection_info, [Id]),
    {error, not_found} = call(A, ktls_filter, connection_info, [nosuch@nohost]),
    %% inet:getstat/1,2 through the connection's socket form, as on an
    %% inet_tcp_dist controller port
    {ok, S} = call(A, ktls_filter, socket, [Ctrl]),
    {ok, Stat} = call(A, inet, getstat, [S]),
    [recv_oct, recv_cnt, recv_avg, send_oct, send_cnt, send_avg, send_pend] =
        [K || {K, _} <- Stat],
    {recv_cnt, RecvCnt} = lists:keyfind(recv_cnt, 1, Stat),
    {recv_oct, RecvOct} = lists:keyfind(recv_oct, 1, Stat),
    true = RecvCnt >= In andalso RecvOct > RecvCnt,
    {ok, [{send_cnt, SendCnt}]} = call(A, ktls_filter, getstat, [NB, [send_cnt]]),
    true = SendCnt >= Out,
    {error, einval} = call(A, inet, getstat, [S, [no_such_stat]]),
    {ok, Peer} = call(A, inet, peername, [S]),
    {ok, [{nodelay, true}]} = call(A, inet, getopts, [S, [nodelay]]),
    ok.

%% With zero-copy receive (a runtime with patches/0002) received binaries
%% live in the carrier's pool buffers: held binaries pin buffers, and the
%% buffers return to the pool once the VM has released them. Without it the
%% NIF copies, and the pool stays small whatever the VM holds.
pool_buffers_return_after_release(_Config) ->
    {A, _} = start("a", ktls),
    {_B, NB} = start("b", ktls),
    pong = call(A, net_adm, ping, [NB]),
    InUse = fun() ->
                    #{pool := #{buffers_in_use := N, large_in_use := L}} =
                        call(A, ktls_filter, carrier_stats, []),
                    N + L
            end,
    #{zero_copy_rx := ZeroCopy} = call(A, ktls_filter, carrier_stats, []),
    Before = InUse(),
    %% A process on A asks B for 2,000 distinct 8 KiB binaries and keeps them
    %% (each arrives unfragmented in one dist packet, so zero-copy applies).
    ok = call(A, erlang, apply, [fun() ->
        Holder = spawn(fun() ->
                               Bins = [erpc:call(NB, crypto, strong_rand_bytes, [8192])
                                       || _ <- lists:seq(1, 2000)],
                               receive {drop, From} -> From ! {dropped, length(Bins)} end
                       end),
        true = register(ktls_ct_holder, Holder),
        ok
    end, []]),
    ok = ktls_ct_nodes:wait_until(fun() -> InUse() > Before orelse not ZeroCopy end, 20000),
    timer:sleep(500),
    Holding = InUse(),
    {dropped, 2000} = call(A, erlang, apply, [fun() ->
        ktls_ct_holder ! {drop, self()},
        R = receive {dropped, _} = D -> D after 30000 -> timeout end,
        [erlang:garbage_collect(P) || P <- processes()],
        R
    end, []]),
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   call(A, erlang, apply, [fun() -> [erlang:garbage_collect(P) || P <- processes()], ok end, []]),
                   InUse() =< Before + 2
           end, 20000),
    ct:pal("zero_copy_rx ~p: pool buffers in use ~p before, ~p holding, ~p after",
           [ZeroCopy, Before, Holding, InUse()]),
    case ZeroCopy of
        true -> true = Holding > Before + 2;  % the held binaries pinned buffers
        false -> ok
    end,
    ok.

%% The default reader is the connection's receive port (rx_reader port): the
%% input process on B is linked to a ktls_filter_nif port, and a receiver that
%% falls behind pauses the port at rx_window and resumes it through
%% consumed/2 (a 64 KiB window against 64 MiB of traffic: ~1,000 pauses).
rx_port_reads_and_pauses(_Config) ->
    {A, _} = start("a", ktls),
    {B, NB} = start("b", ktls, ["-ktls_filter", "rx_window", "65536"]),
    pong = call(A, net_adm, ping, [NB]),
    RxPorts = fun() ->
                      call(B, erlang, apply, [fun() ->
                          [P || P <- erlang:ports(),
                                erlang:port_info(P, name) =:= {name, "ktls_filter_nif"}]
                      end, []])
              end,
    [_] = RxPorts(),
    FdsBefore = ktls_ct_nodes:fd_count(B),
    N = 1024,
    Sum = call(A, erlang, apply, [fun() ->
        Self = self(),
        P = spawn(NB, fun() ->
                              Recv = fun R(I, Acc) when I > N -> Acc;
                                         R(I, Acc) ->
                                             receive
                                                 {seq, I, Bin} ->
                                                     %% a slow receiver: the input process
                                                     %% runs ahead only by rx_window
                                                     I rem 64 =:= 0 andalso timer:sleep(1),
                                                     R(I + 1, erlang:crc32(Acc, Bin));
                                                 {seq, J, _} -> {out_of_order, I, J}
                                             after 30000 -> {timeout, I}
                                             end
                                     end,
                              Self ! {done, Recv(1, 0)}
                      end),
        Expected = lists:foldl(fun(I, Acc) ->
                                       Bin = binary:copy(<<I:32>>, 16384),
                                       P ! {seq, I, Bin},
                                       erlang:crc32(Acc, Bin)
                               end, 0, lists:seq(1, N)),
        receive {done, Got} -> {Expected, Got} after 120000 -> timeout end
    end, []], 150000),
    {Expected, Expected} = Sum,
    [#{stats := #{recv_calls := Recvs}}] = call(B, ktls_filter, connections, []),
    true = Recvs > 100,
    %% Idle now: the connection holds no buffer of the pool (the port gives
    %% its buffer back whenever the socket is drained).
    ok = ktls_ct_nodes:wait_until(
           fun() ->
                   call(B, erlang, apply, [fun() ->
                       [erlang:garbage_collect(P) || P <- processes()], ok
                   end, []]),
                   #{pool := #{buffers_in_use := InUse}} = call(B, ktls_filter, carrier_stats, []),
                   InUse =:= 0
           end, 10000),
    %% The connection ends: its port goes with it, and the socket and the
    %% port's duplicate of it are closed.
    true = call(A, erlang, disconnect_node, [NB]),
    ok = ktls_ct_nodes:wait_until(fun() -> RxPorts() =:= [] end, 10000),
    ok = ktls_ct_nodes:wait_until(fun() -> ktls_ct_nodes:fd_count(B) < FdsBefore end, 10000),
    ok.

%% rx_reader ring: the carrier's ring thread reads, as before receive ports.
rx_reader_ring(_Config) ->
    {A, _} = start("a", ktls, ["-ktls_filter", "rx_reader", "ring"]),
    {B, NB} = start("b", ktls, ["-ktls_filter", "rx_reader", "ring"]),
    pong = call(A, net_adm, ping, [NB]),
    [] = call(B, erlang, apply, [fun() ->
        [P || P <- erlang:ports(), erlang:port_info(P, name) =:= {name, "ktls_filter_nif"}]
    end, []]),
    Big = lists:seq(1, 100000),
    Big = call(A, erpc, call, [NB, lists, reverse, [lists:reverse(Big)]]),
    ok.

%% ------------------------------------------------------------------

start_named(Name, Carrier, Extra) ->
    {P, N} = ktls_ct_nodes:start(Name, Carrier, allow() ++ Extra),
    ktls_ct_nodes:track(P),
    {P, N}.


%% net_kernel:setopts/getopts as with inet_tcp_dist: `new' for later
%% connections, a live connection's socket, bad options refused.
setopts_getopts(_Config) ->
    {A, _} = start("a", ktls),
    {_B, NB} = start("b", ktls),
    ok = call(A, net_kernel, setopts, [new, [{nodelay, false}]]),
    {error, noconnection} = call(A, net_kernel, getopts, [NB, [nodelay]]),
    pong = call(A, net_adm, ping, [NB]),
    {ok, [{nodelay, false}]} = call(A, net_kernel, getopts, [NB, [nodelay]]),
    ok = call(A, net_kernel, setopts, [NB, [{nodelay, true}]]),
    {ok, [{nodelay, true}]} = call(A, net_kernel, getopts, [NB, [nodelay]]),
    ok = call(A, net_kernel, setopts, [NB, [{priority, 3}, {sndbuf, 262144}]]),
    {ok, [{priority, 3}]} = call(A, net_kernel, getopts, [NB, [priority]]),
    {error, {badopts, [{packet, 4}]}} = call(A, net_kernel, setopts, [NB, [{packet, 4}]]),
    {error, {badopts, [{active, true}]}} = call(A, net_kernel, setopts, [new, [{active, true}]]),
    {error, noconnection} = call(A, net_kernel, getopts, ['pixie@fairyland', [nodelay]]),
    ok.

%% The kernel parameters inet_dist_connect_options and
%% inet_dist_listen_options reach the sockets of both ends.
inet_dist_options(_Config) ->
    Opts = ["-kernel", "inet_dist_connect_options", "[{priority,2}]",
            "-kernel", "inet_dist_listen_options", "[{priority,1}]"],
    {C, NC} = start("c", ktls, Opts),
    {D, ND} = start("d", ktls, Opts),
    pong = call(C, net_adm, ping, [ND]),
    {ok, [{priority, 2}]} = call(C, net_kernel, getopts, [ND, [priority]]),
    {ok, [{priority, 1}]} = call(D, net_kernel, getopts, [NC, [priority]]),
    ok.

%% The carrier starts once, under kernel's net_sup (ktls_filter_sup, from
%% childspecs/0): a run-time change (filter_mode monitor) survives the
%% node's next outbound connection, which once re-read the options and set
%% enforce again; options that apply at start only are refused.
one_lifecycle(_Config) ->
    {A, NA} = ktls_ct_nodes:start(ktls_ct_nodes:unique("a"), ktls),
    ktls_ct_nodes:track(A),
    Children = ktls_ct_nodes:call(A, supervisor, which_children, [net_sup]),
    ?assertMatch({ktls_filter_sup, _, supervisor, _}, lists:keyfind(ktls_filter_sup, 1, Children)),
    ?assert(is_pid(ktls_ct_nodes:call(A, erlang, whereis, [ktls_filter_carrier]))),
    {error, Msg} = ktls_ct_nodes:call(A, ktls_filter, config_set, [listen_port, 1]),
    ?assertNotEqual(nomatch, string:find(Msg, "applies at start only")),
    ok = ktls_ct_nodes:call(A, ktls_filter, config_set, [filter_mode, monitor]),
    %% An outbound connection from A.
    {C, NC} = ktls_ct_nodes:start(ktls_ct_nodes:unique("c"), ktls),
    ktls_ct_nodes:track(C),
    pong = ktls_ct_nodes:call(A, net_adm, ping, [NC]),
    ?assertEqual(monitor, ktls_ct_nodes:call(A, ktls_filter_config, get, [filter_mode])),
    %% ... and the filter still runs in monitor mode: an erpc the default
    %% policy refuses reaches A.
    Pid = ktls_ct_nodes:call(C, erpc, call, [NA, os, getpid, []]),
    ?assertEqual(ktls_ct_nodes:call(A, os, getpid, []), Pid),
    ok.

%% net_kernel:disconnect/1 returns once dist_util's connection supervisor
%% has exited. The socket closes as it exits, not when the controller gets
%% to the exit signal, so the peer sees the connection go as soon as with
%% inet_tcp (erl_distribution_SUITE:differing_cookies asks the peer's
%% nodes() right after). B's controller is held suspended here and the
%% supervisor killed: only the supervisor's exit can close the socket.
disconnect_closes_with_the_supervisor(_Config) ->
    {A, NA} = start("a", ktls),
    {B, NB} = start("b", ktls),
    pong = call(A, net_adm, ping, [NB]),
    ok = call(B, ?MODULE, kill_supervisor_of_held_controller, [NA]),
    ok = ktls_ct_nodes:wait_until(fun() -> call(A, erlang, nodes, []) =:= [] end, 3000).

%% Suspends this node's controller of the connection with Node (for as long
%% as the node lives), then kills the connection supervisor.
kill_supervisor_of_held_controller(Node) ->
    {Node, Ctrl} = lists:keyfind(Node, 1, erlang:system_info(dist_ctrl)),
    {links, Links} = process_info(Ctrl, links),
    [Sup] = [P || P <- Links, is_pid(P),
                  process_info(P, current_function) =:= {current_function, {dist_util, con_loop, 2}}],
    Self = self(),
    _ = spawn(fun() ->
                      true = erlang:suspend_process(Ctrl),
                      Self ! held,
                      receive after infinity -> ok end
              end),
    receive held -> ok end,
    true = exit(Sup, kill),
    ok.

%% What a peer sent before it closed the connection reaches its receivers,
%% as with OTP's carriers, whose ports read a stream to its end before they
%% close: A's input process is held here while B's burst arrives, B then
%% closes the connection, and every message still arrives once the input
%% runs again (the controller waits for it; its exit takes the node down
%% and would end the input process with what it had not delivered yet).
last_messages_before_a_close_arrive(_Config) ->
    {A, NA} = start("a", ktls),
    {B, NB} = start("b", ktls),
    pong = call(A, net_adm, ping, [NB]),
    Counter = call(A, erlang, spawn, [?MODULE, count, []]),
    true = call(A, erlang, register, [ktls_counter, Counter]),
    Holder = call(A, ?MODULE, hold_input, [NB]),
    N = 200,
    ok = call(B, ?MODULE, send_burst, [NA, N]),
    %% The burst is in A's socket or already read (the input is held).
    timer:sleep(300),
    true = call(B, erlang, disconnect_node, [NA]),
    timer:sleep(300),
    call(A, erlang, send, [Holder, release]),
    ok = ktls_ct_nodes:wait_until(fun() -> call(A, erlang, nodes, []) =:= [] end, 5000),
    _ = ktls_ct_nodes:wait_until(fun() -> call(A, ?MODULE, count_of, []) =:= N end, 2000),
    ?assertEqual(N, call(A, ?MODULE, count_of, [])).

count() -> count(0).
count(K) ->
    receive
        {msg, _, _} -> count(K + 1);
        {count, From} -> From ! {count, K}, count(K)
    end.

count_of() ->
    ktls_counter ! {count, self()},
    receive {count, K} -> K after 2000 -> timeout end.

%% Suspends the input process of this node's connection with Node until
%% the returned process gets `release'.
hold_input(Node) ->
    {Node, Ctrl} = lists:keyfind(Node, 1, erlang:system_info(dist_ctrl)),
    {links, Links} = process_info(Ctrl, links),
    [Input] = [P || P <- Links, is_pid(P),
                    process_info(P, current_function) =:=
                        {current_function, {ktls_filter_dist_ctrl, input_loop, 3}}],
    Self = self(),
    Holder = spawn(fun() ->
                           true = erlang:suspend_process(Input),
                           Self ! {held, self()},
                           receive release -> erlang:resume_process(Input) end
                   end),
    receive {held, Holder} -> Holder end.

send_burst(Node, N) ->
    Bin = binary:copy(<<7>>, 1024),
    lists:foreach(fun(I) -> {ktls_counter, Node} ! {msg, I, Bin} end, lists:seq(1, N)).
