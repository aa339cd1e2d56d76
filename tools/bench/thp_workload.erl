%% A memory-heavy workload for comparing the stock runtime with the THP
%% patched one (+MMthp true): a large ETS table hit at random (TLB-bound) and
%% large binaries allocated, touched and dropped. Prints microseconds.
-module(thp_workload).
-export([main/0]).

main() ->
    rand:seed(exsss, {1, 2, 3}),
    T0 = erlang:monotonic_time(microsecond),
    Tab = ets:new(w, [set, {read_concurrency, false}]),
    N = 2000000,
    [ets:insert(Tab, {I, I * 3, <<I:64>>}) || I <- lists:seq(1, N)],
    T1 = erlang:monotonic_time(microsecond),
    lookups(Tab, N, 6000000, 0),
    T2 = erlang:monotonic_time(microsecond),
    binaries(60),
    T3 = erlang:monotonic_time(microsecond),
    io:format("~p.~n", [#{ets_fill_us => T1 - T0, ets_lookup_us => T2 - T1,
                          binaries_us => T3 - T2, total_us => T3 - T0}]),
    halt().

lookups(_Tab, _N, 0, Acc) -> Acc;
lookups(Tab, N, K, Acc) ->
    [{_, V, _}] = ets:lookup(Tab, rand:uniform(N)),
    lookups(Tab, N, K - 1, Acc bxor V).

binaries(0) -> ok;
binaries(K) ->
    B = binary:copy(<<K:8>>, 16 * 1024 * 1024),
    16777216 = byte_size(B),
    _ = binary:at(B, 12345),
    binaries(K - 1).
