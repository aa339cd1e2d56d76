%% The controller of `./ktls cluster' (tools/cluster/cluster.sh starts it as
%% a hidden, non-listening ktls_filter node with its own certificate): waits
%% for the nodes, makes the full mesh, runs a scenario and prints the
%% report. Exit status 0 only when everything asked for worked.
-module(ktls_cluster_ctl).

-export([main/1]).

main([Cmd, NodesFile | Args]) ->
    {ok, Nodes} = file:consult(NodesFile),
    Status = try
                 run(Cmd, Nodes, Args)
             catch
                 C:E:S ->
                     io:format(standard_error, "cluster: ~s failed: ~p:~0tp~n  ~0tp~n",
                               [Cmd, C, E, S]),
                     1
             end,
    halt(Status).

run("wait", Nodes, [TimeoutS]) ->
    Deadline = erlang:monotonic_time(millisecond) + list_to_integer(TimeoutS) * 1000,
    [wait(N, Deadline) || N <- Nodes],
    Seen = [{N, erpc:call(N, ktls_cluster, mesh, [Nodes])} || N <- Nodes],
    Full = [N || {N, Others} <- Seen, Others =:= lists:sort(Nodes -- [N])],
    io:format("cluster: ~w nodes up, full mesh: ~s~n",
              [length(Nodes), case length(Full) =:= length(Nodes) of
                                  true -> "yes";
                                  false -> "NO"
                              end]),
    case length(Full) =:= length(Nodes) of true -> 0; false -> 1 end;
run("status", Nodes, []) ->
    print_reports(Nodes),
    0;
run("traffic", Nodes, [DurationS]) ->
    Ms = list_to_integer(DurationS) * 1000,
    io:format("cluster: traffic for ~s s, every node to every other (256-byte messages)~n",
              [DurationS]),
    Results = erpc:multicall(Nodes, ktls_cluster, traffic, [Nodes, Ms], Ms + 60000),
    Rows = lists:zip(Nodes, Results),
    io:format("~n| node | sent | received by sinks | msgs/s |~n|---|---|---|---|~n"),
    Ok = lists:foldl(
           fun({N, {ok, {Sent, Got}}}, Acc) ->
                   io:format("| ~s | ~w | ~w | ~w |~n", [N, Sent, Got, round(Sent * 1000 / Ms)]),
                   Acc andalso Sent > 0 andalso Got =:= Sent;
              ({N, Error}, _) ->
                   io:format("| ~s | error ~0tp | | |~n", [N, Error]),
                   false
           end, true, Rows),
    print_reports(Nodes),
    case Ok of true -> 0; false -> 1 end;
run("latency", Nodes, [CountS]) ->
    Count = list_to_integer(CountS),
    io:format("~n| from | to | p50 us | p99 us |~n|---|---|---|---|~n"),
    [begin
         T = erpc:call(A, ktls_cluster, pingpong, [B, Count], 120000),
         io:format("| ~s | ~s | ~w | ~w |~n",
                   [A, B, lists:nth(max(1, Count div 2), T),
                    lists:nth(max(1, (Count * 99) div 100), T)])
     end || A <- Nodes, B <- Nodes, A =/= B],
    print_reports(Nodes),
    0.

wait(Node, Deadline) ->
    case net_adm:ping(Node) of
        pong ->
            ok;
        pang ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error({node_not_up, Node});
                false -> timer:sleep(200), wait(Node, Deadline)
            end
    end.

print_reports(Nodes) ->
    io:format("~n| node | memory MiB | processes | mesh peers / connections (with this tool's) "
              "| TLS | filter seen / kept / dropped |~n"
              "|---|---|---|---|---|---|~n"),
    [case catch erpc:call(N, ktls_cluster, report, [], 30000) of
         #{} = R ->
             io:format("| ~s | ~.1f | ~w | ~w / ~w | ~s | ~w / ~w / ~w |~n",
                       [N, maps:get(memory_mib, R), maps:get(processes, R), maps:get(peers, R),
                        maps:get(connections, R), tls_text(R), maps:get(messages_seen, R),
                        maps:get(messages_kept, R), maps:get(messages_dropped, R)]);
         Other ->
             io:format("| ~s | unreachable: ~0tp | | | | |~n", [N, Other])
     end || N <- Nodes],
    ok.

tls_text(#{tls := []}) ->
    "plain";
tls_text(#{tls := Tls, ktls_fallback_reason := Why}) ->
    Versions = lists:usort([atom_to_list(V) || #{protocol := V} <- Tls]),
    Kernel = lists:all(fun(#{kernel_tx := T, kernel_rx := R}) -> T andalso R end, Tls),
    lists:flatten(io_lib:format("~s, ~s", [lists:join("/", Versions),
                                            case Kernel of
                                                true -> "kTLS";
                                                false -> io_lib:format("user space (~ts)", [Why])
                                            end])).
