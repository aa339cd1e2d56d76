%% Workloads of `./ktls bench', run on node A against node B over the
%% carrier under test. Every loop is bounded in count and time.
-module(ktls_bench).

-export([bulk/3, small/3, pingpong/2, setup_time/2, os_pid/0, cpu_ticks/0, sink/0, echo/0]).

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

%% @doc Connection setup: disconnect, then time a ping that reconnects (us, sorted).
-spec setup_time(node(), pos_integer()) -> [non_neg_integer()].
setup_time(Node, N) ->
    lists:sort([begin
                    erlang:disconnect_node(Node),
                    wait_disconnected(Node, 100),
                    T0 = erlang:monotonic_time(microsecond),
                    pong = net_adm:ping(Node),
                    erlang:monotonic_time(microsecond) - T0
                end || _ <- lists:seq(1, N)]).

wait_disconnected(_Node, 0) -> ok;
wait_disconnected(Node, K) ->
    case lists:member(Node, nodes()) of
        true -> timer:sleep(10), wait_disconnected(Node, K - 1);
        false -> ok
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
