%% @doc Started on every node of the OTP suites' run (`-s ktls_otp_probe' in
%% ERL_FLAGS): records the node's carrier and the filter's node-wide
%% counters, so that tests/otp/run.sh can check that every node ran
%% ktls_filter and sum the `would_drop' counts of monitor mode.
%%
%% The suites stop their peers with halt/0, which no process sees, so the
%% probe samples: every 100 ms, when the counters moved, it rewrites
%% `$KTLS_OTP_PROBE_DIR/<os pid>.term'. What a node counted in its last
%% 100 ms is lost; the totals are a lower bound.
-module(ktls_otp_probe).

-export([start/0, summary/1]).

-define(INTERVAL, 100).

-spec start() -> ok.
start() ->
    case os:getenv("KTLS_OTP_PROBE_DIR") of
        false ->
            ok;
        Dir ->
            File = filename:join(Dir, os:getpid() ++ ".term"),
            _ = spawn(fun() -> loop(File, undefined) end),
            ok
    end.

loop(File, Last) ->
    Sample = sample(),
    Next = case Sample of
               Last -> Last;
               _ -> write(File, Sample), Sample
           end,
    receive after ?INTERVAL -> loop(File, Next) end.

%% {Node, Carrier, WouldDrop, MessagesSeen}
sample() ->
    Carrier = case init:get_argument(proto_dist) of
                  {ok, [[P]]} -> list_to_atom(P);
                  {ok, _} -> inet_tcp;  % net_kernel's choice for several
                  error -> inet_tcp
              end,
    {WouldDrop, Seen} =
        case erlang:module_loaded(ktls_filter_nif) of
            true ->
                try ktls_filter:world_stats_get() of
                    #{would_drop := W, messages_seen := S} -> {W, S}
                catch
                    _:_ -> {0, 0}
                end;
            false ->
                {0, 0}
        end,
    {node(), Carrier, WouldDrop, Seen}.

%% prim_file, not file: a node started by the slave module (-master) uses
%% its master's file server over dist, and a write every 100 ms is traffic
%% that keeps that connection alive: erl_distribution_SUITE:tick_change
%% waits for a node that stopped ticking to be dropped for lack of input.
write(File, Sample) ->
    Tmp = File ++ ".tmp",
    ok = prim_file:write_file(Tmp, unicode:characters_to_binary(
                                     io_lib:format("~p.~n", [Sample]))),
    ok = prim_file:rename(Tmp, File).

%% @doc Prints what the probes of Dir recorded: per node with traffic, its
%% carrier, would_drop and messages seen; then the totals, and the nodes
%% that ran another carrier than their suite asked for.
-spec summary([string()]) -> no_return().
summary([Dir]) ->
    Samples = lists:sort(
                [S || F <- filelib:wildcard(filename:join(Dir, "*.term")),
                      {ok, [S]} <- [file:consult(F)]]),
    Dist = [S || {N, _, _, _} = S <- Samples, N =/= nonode@nohost],
    [io:format("probe ~-70s ~-12s would_drop=~w seen=~w~n", [N, C, W, M])
     || {N, C, W, M} <- Dist, W + M > 0 orelse C =/= ktls_filter],
    W = lists:sum([W || {_, ktls_filter, W, _} <- Dist]),
    M = lists:sum([M || {_, ktls_filter, _, M} <- Dist]),
    K = length([x || {_, ktls_filter, _, _} <- Dist]),
    io:format("WOULD_DROP total=~w messages_seen=~w ktls_nodes=~w other_nodes=~w~n",
              [W, M, K, length(Dist) - K]),
    halt().
