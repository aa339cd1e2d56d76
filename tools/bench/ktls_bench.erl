%% Workloads of `./ktls bench', run on node A against node B over the
%% carrier under test. Every loop is bounded in count and time.
-module(ktls_bench).

-export([bulk/3, small/3, pingpong/2, setup_time/2, tls_info/0, os_pid/0, cpu_ticks/0, sink/0,
         echo/0]).

-define(TIMEOUT, 60000).

%% @doc Bulk: Count binaries of Size bytes from here to a sink on Node, at most
%% Window unacknowledged; returns {Bytes, Microseconds}.
-spec bulk(node(), pos_integer(), pos_integer()) -> {non_neg_integer(), non_neg_integer()}.
bulk(Node, Size, Count) ->
    Bin = binary:copy(<<7>>, Size),
    Window = max(4, min(256, (8 * 1024 * 1024) div Size)),
    Sink = spawn(Node, ?MODULE, sink, []),
    T0 = erlang:monotonic_time(microsecond),
    send_windowed(Sink, Bin, 1, Count, 0, Window),
    T = erlang:monotonic_time(microsecond) - T0,
    exit(Sink, kill),
    {Size * Count, T}.

send_windowed(Sink, _Bin, Seq, Count, Acked, _Window) when Seq > Count ->
    wait_ack(Sink, Acked, Count);
send_windowed(Sink, Bin, Seq, Count, Acked, Window) when Seq - Acked > Window ->
    A = wait_ack(Sink, Acked, Acked + 1),
    send_windowed(Sink, Bin, Seq, Count, A, Window);
send_windowed(Sink, Bin, Seq, Count, Acked, Window) ->
    Ack = Seq rem 8 =:= 0 orelse Seq =:= Count,
    Sink ! {self(), Ack, Seq, Bin},
    send_windowed(Sink, Bin, Seq + 1, Count, Acked, Window).

wait_ack(_Sink, Acked, Want) when Acked >= Want ->
    Acked;
wait_ack(Sink, _Acked, Want) ->
    receive
        {ack, Sink, Seq} -> wait_ack(Sink, Seq, Want)
    after ?TIMEOUT -> exit(bench_timeout)
    end.

%% @doc Receives bulk and small messages; acknowledges when asked.
-spec sink() -> no_return().
sink() ->
    receive
        {From, true, Seq, _} -> From ! {ack, self(), Seq};
        {_From, false, _Seq, _} -> ok
    end,
    sink().

%% @doc Small messages: Senders processes each send PerSender small messages
%% (windowed); returns {Messages, Microseconds}.
-spec small(node(), pos_integer(), pos_integer()) -> {non_neg_integer(), non_neg_integer()}.
small(Node, Senders, PerSender) ->
    Self = self(),
    Sinks = [spawn(Node, ?MODULE, sink, []) || _ <- lists:seq(1, Senders)],
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() ->
                               send_windowed(Sink, small, 1, PerSender, 0, 2048),
                               Self ! {done, self()}
                       end) || Sink <- Sinks],
    [receive {done, P} -> ok after ?TIMEOUT -> exit(bench_timeout) end || P <- Pids],
    T = erlang:monotonic_time(microsecond) - T0,
    [exit(S, kill) || S <- Sinks],
    {Senders * PerSender, T}.

%% @doc Ping-pong round trips in microseconds (sorted).
-spec pingpong(node(), pos_integer()) -> [non_neg_integer()].
pingpong(Node, N) ->
    Echo = spawn(Node, ?MODULE, echo, []),
    _ = [rtt(Echo) || _ <- lists:seq(1, 50)],  % warm up
    R = lists:sort([rtt(Echo) || _ <- lists:seq(1, N)]),
    exit(Echo, kill),
    R.

rtt(Echo) ->
    T0 = erlang:monotonic_time(microsecond),
    Echo ! {self(), ping},
    receive pong -> erlang:monotonic_time(microsecond) - T0
    after ?TIMEOUT -> exit(bench_timeout)
    end.

-spec echo() -> no_return().
echo() ->
    receive {From, ping} -> From ! pong end,
    echo().

%% @doc Connection setup: disconnect, wait for nodedown, then the time from
%% net_kernel:connect_node/1 to the nodeup message, N times (us, sorted).
-spec setup_time(node(), pos_integer()) -> [non_neg_integer()].
setup_time(Node, N) ->
    ok = net_kernel:monitor_nodes(true),
    try
        lists:sort([setup_once(Node, 5) || _ <- lists:seq(1, N)])
    after
        ok = net_kernel:monitor_nodes(false),
        flush_node_events()
    end.

%% The peer may connect back on its own right after a disconnect (its side
%% of the last setup still had messages for us), which would time nothing:
%% connections settle before they are taken down, and a reconnect by the
%% peer is taken down again before the clock starts.
setup_once(Node, Tries) ->
    timer:sleep(50),
    case lists:member(Node, nodes()) of
        true ->
            true = erlang:disconnect_node(Node),
            receive {nodedown, Node} -> ok after ?TIMEOUT -> exit(bench_timeout) end,
            timer:sleep(50);
        false ->
            ok
    end,
    flush_node_events(),
    case lists:member(Node, nodes()) of
        true when Tries > 0 ->
            setup_once(Node, Tries - 1);
        true ->
            exit({setup_peer_keeps_reconnecting, Node});
        false ->
            T0 = erlang:monotonic_time(microsecond),
            true = net_kernel:connect_node(Node),
            receive
                {nodeup, Node} -> erlang:monotonic_time(microsecond) - T0
            after ?TIMEOUT -> exit(bench_timeout)
            end
    end.

flush_node_events() ->
    receive
        {nodeup, _} -> flush_node_events();
        {nodedown, _} -> flush_node_events()
    after 0 -> ok
    end.

%% @doc TLS of this node's open dist connections, one map per connection
%% (#{protocol, cipher, record_layer}); [] for plain carriers. ktls_filter
%% says it in connections/0; for inet_tls_dist the receiver process of each
%% connection is asked (OTP 25: a sibling of the dist controller, the
%% tls_sender, under the connection's supervisor).
-spec tls_info() -> [map()].
tls_info() ->
    case code:ensure_loaded(ktls_filter) of
        {module, ktls_filter} ->
            [ktls_tls(Tls) || #{open := true, tls := Tls} <- ktls_filter:connections(),
                              is_map(Tls)];
        {error, _} ->
            lists:append([inet_tls_info(Ctrl) || {_Node, Ctrl} <- erlang:system_info(dist_ctrl),
                                                  is_pid(Ctrl)])
    end.

ktls_tls(#{protocol := P, cipher := C, kernel_tx := KTx, kernel_rx := KRx} = Tls) ->
    Layer = case {KTx, KRx} of
                {true, true} -> kernel;
                {false, false} -> user_space;
                _ -> mixed
            end,
    #{protocol => P, cipher => C, record_layer => Layer,
      kernel_fallback => maps:get(kernel_fallback, Tls, undefined)}.

inet_tls_info(Ctrl) ->
    {dictionary, D} = erlang:process_info(Ctrl, dictionary),
    case proplists:get_value('$ancestors', D) of
        [Sup | _] when is_pid(Sup) ->
            [begin
                 {ok, I} = ssl_gen_statem:connection_information(R, false),
                 #{protocol => proplists:get_value(protocol, I),
                   cipher => list_to_binary(ssl:suite_to_openssl_str(
                                              proplists:get_value(selected_cipher_suite, I))),
                   record_layer => otp_ssl}
             end || {receiver, R, _, _} <- supervisor:which_children(Sup)];
        _ ->
            []  % inet_tcp_dist: the controller is a port
    end.

-spec os_pid() -> string().
os_pid() -> os:getpid().

%% @doc utime + stime of this OS process, in clock ticks.
-spec cpu_ticks() -> non_neg_integer().
cpu_ticks() ->
    {ok, Stat} = file:read_file("/proc/self/stat"),
    [_, AfterComm] = binary:split(Stat, <<") ">>),
    Fields = binary:split(AfterComm, <<" ">>, [global]),
    %% fields after "(comm) ": state is index 1; utime is 14, stime 15 of the full line
    binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)).
