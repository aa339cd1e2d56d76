%% @doc The target side of ktls_loadgen: an echo process and a stats helper,
%% registered on the node under load (a test or `./ktls loadgen scale' starts
%% them; nothing here is needed for idle or churn runs).
%%
%% Plain messages to registered processes of the application's own (not
%% OTP's) are what ktls_filter's default policy lets a peer send, so the
%% simulated nodes need no allow list. Message shapes are those of
%% tools/loadgen/dist_codec.h. The stats helper also tells the swarm which
%% carrier the node runs and its filter's refusals (the attack mix).
-module(ktls_loadgen_target).

-export([start/0, stop/0, echo_loop/0, stats_loop/1, gc_all/0]).

-define(ECHO, ktls_loadgen_echo).
-define(STATS, ktls_loadgen_stats).

%% @doc Starts and registers the echo and stats processes (not linked to
%% the caller); an old pair is stopped first.
-spec start() -> ok.
start() ->
    stop(),
    PageSize = page_size(),
    true = register(?ECHO, spawn(fun echo_loop/0)),
    true = register(?STATS, spawn(fun() -> stats_loop(PageSize) end)),
    ok.

-spec stop() -> ok.
stop() ->
    [exit(P, kill) || N <- [?ECHO, ?STATS], P <- [whereis(N)], is_pid(P)],
    ok.

%% @doc Garbage-collects every process, so that memory measured before and
%% after a change compares like with like (scale.escript).
-spec gc_all() -> ok.
gc_all() ->
    _ = [erlang:garbage_collect(P) || P <- processes()],
    ok.

%% {lg, From, Seq, SentNs, Payload} -> From ! {lg_echo, Seq, SentNs, Payload}
-spec echo_loop() -> no_return().
echo_loop() ->
    receive
        {lg, From, Seq, SentNs, Payload} when is_pid(From) ->
            From ! {lg_echo, Seq, SentNs, Payload};
        _ ->
            ok
    end,
    echo_loop().

%% {lg_stats_req, From, Seq} -> From ! {lg_stats, Seq, MemTotal, MemProcesses,
%% MemBinary, ProcessCount, PortCount, CpuMs, RssBytes, Carrier, Filtering,
%% MessagesDropped, SpawnRequestsRefused}: the last four say whether the
%% node's carrier refuses the swarm's attack mix and how often it did.
-spec stats_loop(pos_integer()) -> no_return().
stats_loop(PageSize) ->
    receive
        {lg_stats_req, From, Seq} when is_pid(From) ->
            [Total, Procs, Bin] = [erlang:memory(T) || T <- [total, processes, binary]],
            {CpuMs, _} = erlang:statistics(runtime),
            {Carrier, Filtering, Dropped, SpawnRefused} = filter(),
            From ! {lg_stats, Seq, Total, Procs, Bin, erlang:system_info(process_count),
                    erlang:system_info(port_count), CpuMs, rss(PageSize), Carrier, Filtering,
                    Dropped, SpawnRefused};
        _ ->
            ok
    end,
    stats_loop(PageSize).

%% The carrier (-proto_dist) and, on ktls_filter, whether its filter
%% enforces the policy (deep packet inspection on, filter_mode enforce) and
%% its refusal counters.
-spec filter() -> {atom(), boolean(), non_neg_integer(), non_neg_integer()}.
filter() ->
    Carrier = case init:get_argument(proto_dist) of
                  {ok, [[Proto | _] | _]} -> list_to_atom(Proto);
                  _ -> inet_tcp
              end,
    Stats = case Carrier of
                ktls_filter -> catch ktls_filter:world_stats_get();
                _ -> none
            end,
    case Stats of
        #{messages_dropped := Dropped, spawn_requests_refused := SpawnRefused} = W ->
            Filtering = maps:get(deep_packet_inspection, W, false) =:= true andalso
                maps:get(filter_mode, W, enforce) =:= enforce,
            {Carrier, Filtering, Dropped, SpawnRefused};
        _ ->
            {Carrier, false, 0, 0}
    end.

-spec rss(pos_integer()) -> non_neg_integer().
rss(PageSize) ->
    case file:read_file("/proc/self/statm") of
        {ok, Bin} ->
            [_Size, Resident | _] = binary:split(Bin, <<" ">>, [global]),
            binary_to_integer(Resident) * PageSize;
        _ ->
            0
    end.

-spec page_size() -> pos_integer().
page_size() ->
    case string:to_integer(os:cmd("getconf PAGESIZE")) of
        {N, _} when is_integer(N), N > 0 -> N;
        _ -> 4096
    end.
