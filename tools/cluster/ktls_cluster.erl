%% Runs on the nodes of `./ktls cluster' (their allow list names this
%% module): mesh set-up, workloads and each node's report. Called over
%% erpc by the controller (tools/cluster/cluster.escript).
-module(ktls_cluster).

-export([mesh/1, report/0, traffic/2, sink/0, pingpong/2, echo/0]).

%% Connects this node to every other one; returns the nodes it sees.
-spec mesh([node()]) -> [node()].
mesh(Nodes) ->
    [pong = net_adm:ping(N) || N <- Nodes, N =/= node()],
    lists:sort(nodes()).

%% Memory, processes and the carrier's and filter's counters of this node.
-spec report() -> map().
report() ->
    World = ktls_filter:world_stats_get(),
    Carrier = ktls_filter:carrier_stats(),
    Tls = [maps:with([protocol, kernel_tx, kernel_rx], T)
           || #{tls := T} <- ktls_filter:connections(), is_map(T)],
    #{node => node(),
      memory_mib => erlang:memory(total) / (1024 * 1024),
      processes => erlang:system_info(process_count),
      connections => maps:get(connections_open, Carrier, 0),
      peers => length(nodes()),  % the mesh; connections also count this tool's
      tls => lists:usort(Tls),
      tls_handshakes => maps:get(tls_handshakes, Carrier, 0),
      ktls_fallback_reason => maps:get(ktls_fallback_reason, Carrier, undefined),
      messages_seen => maps:get(messages_seen, World, 0),
      messages_kept => maps:get(messages_kept, World, 0),
      messages_dropped => maps:get(messages_dropped, World, 0)}.

%% Sends 256-byte messages to a sink on every other node for Ms
%% milliseconds, one sender per peer; returns {Sent, Received by the sinks}.
-spec traffic([node()], pos_integer()) -> {non_neg_integer(), non_neg_integer()}.
traffic(Nodes, Ms) ->
    Peers = [N || N <- Nodes, N =/= node()],
    Self = self(),
    Payload = binary:copy(<<"x">>, 256),
    Senders = [spawn_link(fun() ->
                                  Sink = spawn(N, ?MODULE, sink, []),
                                  Until = erlang:monotonic_time(millisecond) + Ms,
                                  Sent = send_until(Sink, Payload, Until, 0),
                                  Sink ! {done, self()},
                                  Got = receive {count, C} -> C after 30000 -> 0 end,
                                  Self ! {sent, self(), Sent, Got}
                          end) || N <- Peers],
    lists:foldl(fun(P, {S, G}) ->
                        receive {sent, P, S1, G1} -> {S + S1, G + G1} end
                end, {0, 0}, Senders).

send_until(Sink, Payload, Until, N) ->
    case N rem 1000 =:= 0 andalso erlang:monotonic_time(millisecond) >= Until of
        true ->
            N;
        false ->
            Sink ! Payload,
            %% Bounded: at most ~1000 in flight past the sink's count.
            _ = N rem 1000 =:= 999 andalso sync(Sink),
            send_until(Sink, Payload, Until, N + 1)
    end.

sync(Sink) ->
    Sink ! {sync, self()},
    receive synced -> ok after 30000 -> ok end.

sink() -> sink(0).
sink(N) ->
    receive
        {sync, From} -> From ! synced, sink(N);
        {done, From} -> From ! {count, N};
        _ -> sink(N + 1)
    end.

%% Round trips to an echo process on Node; returns sorted microseconds.
-spec pingpong(node(), pos_integer()) -> [non_neg_integer()].
pingpong(Node, Count) ->
    Echo = spawn(Node, ?MODULE, echo, []),
    Times = [begin
                 T0 = erlang:monotonic_time(microsecond),
                 Echo ! {self(), I},
                 receive {I, _} -> erlang:monotonic_time(microsecond) - T0 end
             end || I <- lists:seq(1, Count)],
    Echo ! stop,
    lists:sort(Times).

echo() ->
    receive
        stop -> ok;
        {From, I} -> From ! {I, node()}, echo()
    end.
