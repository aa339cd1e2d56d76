%% @doc The distribution controller of one ktls_filter connection.
%%
%% One process per connection owns the carrier connection. During the
%% handshake it only waits (dist_util talks to the carrier directly). Once
%% the handshake is complete it is the VM's distribution controller for the
%% channel: it moves outbound data from `erlang:dist_ctrl_get_data/1' to the
%% carrier in batches, and spawns the input handler that feeds inbound
%% packets to `erlang:dist_ctrl_put_data/2'. It is linked to dist_util's
%% connection supervisor; when the connection closes it exits and the
%% supervisor takes the node down.
-module(ktls_filter_dist_ctrl).

-export([start/1, supervisor/2, handshake_complete/3, refuse/3]).
-export([init/1, input_init/4]).
-export([peer_text/1, log_refusal/2]).

%% Packets pulled from the VM per carrier call, and bytes per call.
-define(BATCH_PACKETS, 256).
-define(BATCH_BYTES, 1024 * 1024).

-define(SPAWN_OPTS, [{message_queue_data, off_heap}, {fullsweep_after, 0}]).

%% How long a closed connection's controller waits for its input process
%% to deliver what the peer sent before the close (await_input/1).
-define(INPUT_DRAIN_MS, 5000).

%% @doc Spawns the controller for Conn (not linked; the caller then makes it
%% the owner with ktls_filter_nif:controlling_process/2).
-spec start(ktls_filter_nif:conn()) -> pid().
start(Conn) ->
    spawn_opt(?MODULE, init, [Conn], [{priority, max} | ?SPAWN_OPTS]).

%% @doc Links the controller to dist_util's connection supervisor.
-spec supervisor(pid(), pid()) -> ok.
supervisor(Ctrl, SupPid) ->
    call(Ctrl, {supervisor, SupPid}).

%% @doc Called by dist_util (f_handshake_complete) with the dist handle.
-spec handshake_complete(pid(), node(), term()) -> ok.
handshake_complete(Ctrl, Node, DHandle) ->
    call(Ctrl, {handshake_complete, Node, DHandle}).

%% @doc Called by the accepting handshake process when verify_node_name
%% refuses the peer: the controller logs the refusal (the connection's one
%% log line: its close that follows is not logged again), counts it and
%% closes the connection with Why.
-spec refuse(pid(), ktls_filter_nif:conn(), string()) -> ok.
refuse(Ctrl, Conn, Why) ->
    try call(Ctrl, {refuse, Why})
    catch exit:{dist_controller_exit, _} -> log_refusal(Conn, Why)
    end.

%% @doc Logs and counts a verify_node_name refusal and closes the connection.
-spec log_refusal(ktls_filter_nif:conn(), string()) -> ok.
log_refusal(Conn, Why) ->
    Peer = peer_text(ktls_filter_nif:peername(Conn)),
    logger:warning("ktls_filter: refused ~s: ~ts", [Peer, Why]),
    ktls_filter_tls:count_refusal(),
    _ = ktls_filter_nif:close(Conn, unicode:characters_to_binary(Why)),
    ok.

call(Ctrl, Msg) ->
    Ref = erlang:monitor(process, Ctrl),
    Ctrl ! {Ref, self(), Msg},
    receive
        {Ref, Reply} ->
            erlang:demonitor(Ref, [flush]),
            Reply;
        {'DOWN', Ref, process, Ctrl, Reason} ->
            exit({dist_controller_exit, Reason})
    end.

%% ------------------------------------------------------------------
%% Handshake phase
%% ------------------------------------------------------------------

-spec init(ktls_filter_nif:conn()) -> no_return().
init(Conn) ->
    %% Trapped so a failed handshake can be logged with the peer's address.
    process_flag(trap_exit, true),
    setup_loop(Conn).

setup_loop(Conn) ->
    receive
        {Ref, From, {supervisor, Pid}} ->
            true = link(Pid),
            ok = ktls_filter_nif:watch_supervisor(Conn, Pid),
            From ! {Ref, ok},
            setup_loop(Conn);
        {Ref, From, {refuse, Why}} ->
            ok = log_refusal(Conn, Why),
            put(ktls_logged, true),
            From ! {Ref, ok},
            setup_loop(Conn);
        {Ref, From, {handshake_complete, Node, DHandle}} ->
            put(ktls_node, Node),
            Trusted = ktls_filter_trust:decide(Conn, Node),
            Input = spawn_opt(?MODULE, input_init, [Conn, DHandle, Node, Trusted =/= false],
                              [link | ?SPAWN_OPTS]),
            put(ktls_input, Input),
            ok = erlang:dist_ctrl_input_handler(DHandle, Input),
            Rx = case ktls_filter_nif:start_input(
                        Conn, Input, #{node => Node, local_node => node(),
                                       creation => erlang:system_info(creation),
                                       rx => rx_reader(), trusted => Trusted}) of
                     ok -> ring;
                     {port, _Token} = P -> P
                 end,
            Input ! {DHandle, go, Rx},
            From ! {Ref, ok},
            _ = erlang:dist_ctrl_set_opt(DHandle, get_size, true),
            ok = erlang:dist_ctrl_get_data_notification(DHandle),
            %% The controller runs at high priority from now on, idle or
            %% draining, as the port task of a port-based carrier runs
            %% before processes: the close of the connection (ktls_closed),
            %% which takes the node down in the VM when this process exits,
            %% is seen at once (erl_distribution_SUITE:differing_cookies
            %% asks the peer right after net_kernel:disconnect/1 returns),
            %% and the VM's output queue drains while the senders wait. At
            %% normal priority it drained at the pace of the run queue:
            %% processes that exit in the middle of a fragmented send retry
            %% until the queue is below the busy limit, and a hundred of
            %% them (distribution_SUITE:exit_dist_fragments) took the
            %% controller's turn for 100 s where inet_tcp's port took 17 s.
            %% The controller gives the scheduler up whenever the socket is
            %% busy or the queue is empty.
            _ = process_flag(priority, high),
            output_loop(Conn, DHandle);
        {ktls_closed, Conn, Reason} ->
            log_closed(Conn, handshake, Reason),
            exit(connection_closed);
        {'EXIT', _Sup, Reason} ->
            log_closed(Conn, handshake, Reason),
            ktls_filter_nif:close(Conn, <<"handshake failed">>),
            exit(Reason);
        _Other ->
            setup_loop(Conn)
    end.

%% One log line per failed connection, naming the peer and the reason (none
%% when the refusal that ended it was logged already).
log_closed(Conn, Phase, Reason) ->
    case get(ktls_logged) of
        true -> ok;
        _ -> log_closed_now(Conn, Phase, Reason)
    end.

log_closed_now(Conn, Phase, Reason) ->
    Peer = ktls_filter_nif:peername(Conn),
    Node = get(ktls_node),
    %% Logged by another process: formatting (and, in a young node, loading
    %% the formatter's modules, ~10 ms) must not delay this process's exit,
    %% which is what takes the node down in the VM: the peer's view of the
    %% cluster follows a disconnect at once, as with inet_tcp.
    _ = spawn(fun() ->
                      PeerText = peer_text(Peer),
                      NodeText = case Node of
                                     undefined -> "";
                                     N -> io_lib:format(" (~p)", [N])
                                 end,
                      %% A connection that ends after the handshake is news
                      %% only when the filter ended it (OTP's carriers say
                      %% nothing when a connection closes; its nodedown
                      %% reason is for monitor_nodes): the rest is at info,
                      %% under OTP's default level, so that 10,000 peers
                      %% leaving do not flood the console.
                      %% During the handshake: what the carrier saw (a
                      %% TLS failure, a peer that left; a binary) and
                      %% dist_util's setup timeout are warnings; the rest
                      %% are dist_util's decisions, which it logs itself
                      %% when they are news (a bad cookie, a disallowed
                      %% node) or which are routine (simultaneous connects:
                      %% remarked, shutdown), so they stay at info, as OTP's
                      %% carriers say nothing of them.
                      Level = case {Phase, Reason} of
                                  {handshake, R} when is_binary(R) -> warning;
                                  {handshake, setup_timer_timeout} -> warning;
                                  {handshake, _} -> info;
                                  {connected, _} ->
                                      case nodedown_reason(Reason) of
                                          killed -> warning;
                                          _ -> info
                                      end
                              end,
                      logger:log(Level, "ktls_filter: connection with ~s~s closed during ~p: ~ts",
                                 [PeerText, NodeText, Phase, reason_text(Reason)])
              end),
    ok.

%% The carrier's reasons are text (UTF-8 binaries); exit reasons are terms.
reason_text(Reason) when is_binary(Reason) -> Reason;
reason_text(Reason) -> io_lib:format("~tp", [Reason]).

%% @doc "Ip:Port" of what ktls_filter_nif:peername/1 answered, for log lines.
-spec peer_text({ok, {inet:ip_address(), inet:port_number()}} | {error, term()}) -> string().
peer_text({ok, {Ip, Port}}) -> inet:ntoa(Ip) ++ ":" ++ integer_to_list(Port);
peer_text(_) -> "unknown peer".

%% ------------------------------------------------------------------
%% Output: VM -> carrier
%% ------------------------------------------------------------------

output_loop(Conn, DHandle) ->
    receive
        dist_data ->
            send_data(Conn, DHandle);
        {send, From, Ref, Data} ->
            From ! {Ref, raw_send(Conn, Data)},
            output_loop(Conn, DHandle);
        Other ->
            ok = connection_down(Conn, Other),
            output_loop(Conn, DHandle)
    end.

%% Exits when Msg says the connection or the channel is gone; ok otherwise
%% (other messages are dropped).
connection_down(Conn, {ktls_closed, Conn, Reason}) ->
    %% OTP's nodedown reason is the atom (code matches on it); the detail
    %% (peer, why) is in the log line.
    log_closed(Conn, connected, Reason),
    ok = await_input(Conn),
    exit(nodedown_reason(Reason));
connection_down(Conn, {'EXIT', _From, Reason}) ->
    ktls_filter_nif:close(Conn, <<"dist channel shut down">>),
    exit(Reason);
connection_down(_Conn, _Other) ->
    ok.

%% What the peer sent before it closed is delivered before this process's
%% exit takes the node down (and the linked input process with it): OTP's
%% carriers read a stream to its end before they close. The input process
%% exits once it has passed on everything it was given (it gets
%% ktls_closed after its data); it is waited for only when it still has
%% data, so that a peer's close is seen at once otherwise.
await_input(Conn) ->
    case get(ktls_input) of
        Input when is_pid(Input) ->
            case ktls_filter_nif:unconsumed(Conn) of
                0 ->
                    ok;
                _ ->
                    receive
                        {'EXIT', Input, _} -> ok
                    after ?INPUT_DRAIN_MS -> ok
                    end
            end;
        undefined ->
            ok
    end.

%% The filter closes a connection whose input does not decode where the VM
%% kills the controller of a connection whose input does not decode
%% (dist.c, kill_connection): the nodedown reason is `killed' in both.
nodedown_reason(Reason) when is_binary(Reason) ->
    case binary:match(Reason, <<"dist filter: ">>) of
        nomatch -> connection_closed;
        _ -> killed
    end;
nodedown_reason(_) ->
    connection_closed.

send_data(Conn, DHandle) ->
    case collect(DHandle, ?BATCH_PACKETS, ?BATCH_BYTES, []) of
        {[], _More} ->
            ok = erlang:dist_ctrl_get_data_notification(DHandle),
            output_loop(Conn, DHandle);
        {Packets, More} ->
            case ktls_filter_nif:send_dist(Conn, Packets) of
                ok when More ->
                    send_data(Conn, DHandle);
                ok ->
                    ok = erlang:dist_ctrl_get_data_notification(DHandle),
                    output_loop(Conn, DHandle);
                busy ->
                    %% The VM keeps buffering (and reports the dist entry busy
                    %% above +zdbbl) until the carrier has drained.
                    wait_writable(Conn, DHandle);
                {error, closed} ->
                    %% Closed under our feet: the carrier's reason follows.
                    receive
                        {ktls_closed, Conn, _} = Closed -> connection_down(Conn, Closed)
                    after 5000 ->
                            log_closed(Conn, connected, <<"closed while sending">>),
                            exit(connection_closed)
                    end
            end
    end.

%% `{send, From, Ref, Data}' of OTP's gen_tcp_dist example: Data goes out
%% as one dist packet, beside the VM's traffic, in order after what the
%% controller has already taken from the VM. OTP's distribution_SUITE
%% injects raw (and malformed) dist messages this way. Only processes of
%% this node can send to the controller, as with gen_tcp_dist.
%% Like gen_tcp:send/2 there, the reply waits while the carrier is busy.
raw_send(Conn, Data) ->
    case ktls_filter_nif:send_dist(Conn, [iolist_to_binary(Data)]) of
        busy ->
            receive
                {ktls_writable, Conn} -> ok;
                {ktls_closed, Conn, _} = Closed -> connection_down(Conn, Closed);
                {'EXIT', _, _} = Exit -> connection_down(Conn, Exit)
            end;
        Result ->
            Result
    end.

%% Up to N packets / Bytes from the VM; More says whether the VM may have more.
collect(_DHandle, 0, _Bytes, Acc) ->
    {lists:reverse(Acc), true};
collect(_DHandle, _N, Bytes, Acc) when Bytes =< 0 ->
    {lists:reverse(Acc), true};
collect(DHandle, N, Bytes, Acc) ->
    case erlang:dist_ctrl_get_data(DHandle) of
        none -> {lists:reverse(Acc), false};
        {Size, Data} -> collect(DHandle, N - 1, Bytes - Size, [Data | Acc])
    end.

wait_writable(Conn, DHandle) ->
    receive
        {ktls_writable, Conn} ->
            send_data(Conn, DHandle);
        {ktls_closed, Conn, _} = Closed ->
            connection_down(Conn, Closed);
        {'EXIT', _, _} = Exit ->
            connection_down(Conn, Exit)
    end.

%% ------------------------------------------------------------------
%% Input: carrier -> VM
%% ------------------------------------------------------------------

-spec input_init(ktls_filter_nif:conn(), term(), node(), boolean()) -> no_return().
input_init(Conn, DHandle, Node, Trusted) ->
    put(ktls_conn, Conn),
    put(ktls_node, Node),
    put(ktls_trusted, Trusted),
    receive
        {DHandle, go, ring} ->
            input_loop(Conn, DHandle, undefined);
        {DHandle, go, {port, Token}} ->
            input_loop(Conn, DHandle, ktls_filter_rx_port:open(Token))
    end.

%% RxPort: the connection's receive port, or undefined when the carrier
%% thread reads.
input_loop(Conn, DHandle, RxPort) ->
    receive
        {ktls_data, Conn, Packets, Bytes} ->
            case put_data(DHandle, Packets) of
                ok -> ok;
                %% A large message was refused here: its binary goes now,
                %% not whenever this process next collects.
                collect -> erlang:garbage_collect()
            end,
            case ktls_filter_nif:consumed(Conn, Bytes) of
                ok -> ok;
                resume -> ktls_filter_rx_port:resume(RxPort)
            end,
            input_loop(Conn, DHandle, RxPort);
        {ktls_closed, Conn, Reason} ->
            exit(nodedown_reason(Reason));  % the output side logs the reason
        _Other ->
            input_loop(Conn, DHandle, RxPort)
    end.

%% port when configured and the driver is loaded; ring otherwise.
rx_reader() ->
    case ktls_filter_config:get(rx_reader) of
        port ->
            case ktls_filter_rx_port:available() of
                true -> port;
                false -> ring
            end;
        ring ->
            ring
    end.

put_data(DHandle, [P | Ps]) when is_binary(P) ->
    erlang:dist_ctrl_put_data(DHandle, P),
    put_data(DHandle, Ps);
put_data(DHandle, [{ktls_resolve, {Pid, Op, Safe, Refused, Memo}, Question, Keep, Drop} | Ps]) ->
    %% The receiver is a process of this node the filter has not seen: its
    %% role decides, in order with the traffic (later packets wait).
    Role = ktls_filter_roles:resolve(Pid, Memo),
    Answer = case lists:member(Role, Safe) of
                 true ->
                     ok = ktls_filter_nif:filter_answer(get(ktls_conn), Op, true, false),
                     keep;
                 false ->
                     resolved_refusal(Pid, Role, Refused, Question, Op)
             end,
    put_answer(DHandle, Answer, Keep, Drop, Ps);
put_data(DHandle, [{ktls_ask, Question, Keep, Drop} | Ps]) ->
    %% The handler decides in order with the traffic: later packets wait.
    put_answer(DHandle, ask_handler(Question), Keep, Drop, Ps);
put_data(DHandle, [{ktls_refused, Reason, _Op, Control, Payload, Held} | Ps]) ->
    %% The filter engine dropped a message (the slot of this second's
    %% warning was free): log it, then go on.
    ktls_filter_refusal:log(get(ktls_conn), get(ktls_node),
                            #{reason => Reason, control => Control, payload => Payload,
                              held => Held}),
    put_data(DHandle, Ps);
put_data(DHandle, [{ktls_log, Messages} | Ps]) ->
    %% The batch's logger events: sent from this process, so that each
    %% logger gets this connection's batches in arrival order.
    _ = [Pid ! Msg || {Pid, Msg} <- Messages],
    put_data(DHandle, Ps);
put_data(_DHandle, []) ->
    ok.

%% Delivers the message (Keep) or its refusal (Drop: an answer to the
%% caller, a carrier of atom cache writes, or none), then the rest; asks
%% for a collection when a large message was refused.
put_answer(DHandle, keep, Keep, _Drop, Ps) ->
    erlang:dist_ctrl_put_data(DHandle, Keep),
    put_data(DHandle, Ps);
put_answer(DHandle, drop, Keep, Drop, Ps) ->
    is_binary(Drop) andalso erlang:dist_ctrl_put_data(DHandle, Drop),
    case put_data(DHandle, Ps) of
        _ when byte_size(Keep) >= 1024 * 1024 -> collect;
        Rest -> Rest
    end.

ask_handler({Hint, Op, Control, Payload}) ->
    Conn = get(ktls_conn),
    Node = get(ktls_node),
    Answer = case ktls_filter_config:get(handler) of
                 undefined -> drop;
                 Handler -> ktls_filter_handler:classify(Handler, Hint, Node, Control, Payload)
             end,
    ok = ktls_filter_nif:filter_answer(Conn, Op, Answer =:= keep, false),
    Answer =:= drop andalso
        ktls_filter_refusal:log_if_slot(Conn, Node, #{reason => "refused by the handler ("
                                                                 "hint " ++ atom_to_list(Hint) ++ ")",
                                                      control => Control, payload => Payload}),
    Answer.

%% A looked-up receiver whose role does not make the message safe: monitor
%% mode keeps it (counted as would_drop), a role that only makes it unsafe
%% asks the handler, anything else drops.
resolved_refusal(Pid, Role, Refused, Question, Op) ->
    Conn = get(ktls_conn),
    Log = fun() ->
                  Info = case Question of
                             {_, _, Control, Payload} ->
                                 #{control => Control, payload => Payload};
                             _ ->
                                 #{kind => proplists:get_value(Op, ktls_filter_control:kinds(),
                                                               unknown)}
                         end,
                  ktls_filter_refusal:log_if_slot(
                    Conn, get(ktls_node),
                    Info#{to => Pid, role => Role, reason => "message to a " ++ atom_to_list(Role) ++
                                                   " process that this message may not reach"})
          end,
    Mode = case get(ktls_trusted) of
               true -> monitor;  % a trusted peer (trusted_peers): nothing is dropped
               false -> ktls_filter_config:get(filter_mode)
           end,
    case Mode of
        monitor ->
            ok = ktls_filter_nif:filter_answer(Conn, Op, true, true),
            keep;
        _ when is_tuple(Question) ->
            case lists:member(Role, Refused) of
                true ->
                    ok = ktls_filter_nif:filter_answer(Conn, Op, false, false),
                    Log(),
                    drop;
                false ->
                    ask_handler(Question)
            end;
        _ ->
            ok = ktls_filter_nif:filter_answer(Conn, Op, false, false),
            Log(),
            drop
    end.
