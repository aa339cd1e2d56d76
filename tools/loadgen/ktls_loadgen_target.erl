%% @doc The target side of ktls_loadgen: an echo process and a stats helper,
%% registered on the node under load (a test or `./ktls loadgen scale' starts
%% them; nothing here is needed for idle or churn runs).
%%
%% Plain messages to registered processes of the application's own (not
%% OTP's) are what ktls_filter's default policy lets a peer send, so the
%% simulated nodes need no allow list. Message shapes are those of
%% tools/loadgen/dist_codec.h.
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
%% MemBinary, ProcessCount, PortCount, CpuMs, RssBytes}
-spec stats_loop(pos_integer()) -> no_return().
stats_loop(PageSize) ->
    receive
        {lg_stats_req, From, Seq} when is_pid(From) ->
            [Total, Procs, Bin] = [erlang:memory(T) || T <- [total, processes, binary]],
            {CpuMs, _} = erlang:statistics(runtime),
            From ! {lg_stats, Seq, Total, Procs, Bin, erlang:system_info(process_count),
                    erlang:system_info(port_count), CpuMs, rss(PageSize)};
        _ ->
            ok
    end,
    stats_loop(PageSize).

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
