%% The example handler and logger of erlang/examples, compiled and run on
%% real nodes as the README describes: the handler keeps refused requests
%% from a trusted node only; the logger, started under a supervisor of the
%% node, counts inbound messages per peer and kind (ktls_filter_control).
-module(ktls_examples_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, end_per_testcase/2]).
-export([handler_keeps_requests_of_trusted_nodes_only/1, logger_counts_per_node_and_kind/1,
         start_logger_sup/0]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [handler_keeps_requests_of_trusted_nodes_only, logger_counts_per_node_and_kind].

init_per_suite(Config) ->
    Out = filename:join(?config(priv_dir, Config), "examples"),
    ok = filelib:ensure_path(Out),
    Src = filename:join([ktls_ct_nodes:root(), "erlang", "examples"]),
    [{ok, _} = compile:file(F, [{outdir, Out}, report, warnings_as_errors,
                                {i, filename:join([ktls_ct_nodes:root(), "erlang", "src"])},
                                {pa, ktls_ct_nodes:ebin()}])
     || F <- filelib:wildcard(filename:join(Src, "*.erl"))],
    [{examples, Out} | Config].

end_per_suite(_Config) ->
    ok.

end_per_testcase(_TC, _Config) ->
    ktls_ct_nodes:stop_tracked().

start(Name, Args) ->
    {P, N} = ktls_ct_nodes:start(Name, ktls, Args),
    ktls_ct_nodes:track(P),
    {P, N}.

call(P, M, F, A) -> ktls_ct_nodes:call(P, M, F, A).

handler_keeps_requests_of_trusted_nodes_only(Config) ->
    TName = ktls_ct_nodes:unique("trusted"),
    Trusted = list_to_atom(TName ++ "@127.0.0.1"),
    {K, NK} = start(ktls_ct_nodes:unique("k"),
                    ["-pa", ?config(examples, Config),
                     "-ktls_filter", "handler", "ktls_example_handler",
                     "-ktls_example_trusted", atom_to_list(Trusted)]),
    {T, Trusted} = start(TName, []),
    {U, _NU} = start(ktls_ct_nodes:unique("untrusted"), []),
    %% os:getpid/0 is not in the default allow list: the handler decides.
    KPid = call(K, os, getpid, []),
    KPid = call(T, erpc, call, [NK, os, getpid, []]),
    %% Refused for the untrusted node, at once: erpc raises unauthorized.
    refused = try call(U, erpc, call, [NK, os, getpid, []])
              catch exit:{exception, unauthorized} -> refused
              end,
    {badrpc, _} = call(U, rpc, call, [NK, os, getpid, []]),
    ok.

%% Runs on the node: a supervisor with the example logger's child spec,
%% as a user's application would have it.
start_logger_sup() ->
    {ok, Pid} = supervisor:start_link({local, ktls_example_sup}, ktls_examples_sup_cb, []),
    unlink(Pid),
    ok.

logger_counts_per_node_and_kind(Config) ->
    Examples = ?config(examples, Config),
    ok = write_sup_cb(Examples),
    {K, NK} = start(ktls_ct_nodes:unique("k"), ["-pa", Examples]),
    {A, NA} = start(ktls_ct_nodes:unique("a"), []),
    ok = call(K, ?MODULE, start_logger_sup, []),
    ok = call(K, erlang, apply, [fun() ->
                                         register(sink, spawn(fun Loop() ->
                                                                      receive _ -> Loop() end
                                                              end)),
                                         ok
                                 end, []]),
    pong = call(A, net_adm, ping, [NK]),
    [call(A, erlang, send, [{sink, NK}, {hello, I}]) || I <- lists:seq(1, 25)],
    %% One refused request (an erpc of a function not allowed: dropped),
    %% then a message: the logger sees them in that order, whatever the
    %% batches they came in.
    ok = call(A, erlang, apply,
              [fun() ->
                       {'EXIT', {exception, unauthorized}} = (catch erpc:call(NK, os, getpid, [])),
                       {sink, NK} ! after_drop,
                       ok
               end, []]),
    %% Until the refused request's event has come, and an event after it
    %% (the message sent last, or a later one: never one sent before).
    After = fun(#{last := L}) ->
                    case lists:dropwhile(fun(E) -> E =/= {spawn_request, drop} end, L) of
                        [_ | Rest] -> Rest;
                        [] -> []
                    end;
               (_) -> []
            end,
    ok = ktls_ct_nodes:wait_until(
           fun() -> After(call(K, ktls_example_logger, counts, [1])) =/= [] end, 10000),
    Counts = call(K, ktls_example_logger, counts, [1]),
    ct:log("~p", [Counts]),
    %% Messages to a receiver the filter looks up count as resolve.
    #{dropped := 0, {verdict, drop} := 1, {verdict, keep} := Kept} = Counts,
    true = Kept + maps:get({verdict, resolve}, Counts, 0) >= 27,
    true = maps:get({NA, reg_send}, Counts) >= 27,
    %% Arrival order: the refused request, then the message sent after it.
    true = lists:all(fun({K1, _}) -> K1 =:= reg_send end, After(Counts)),
    ok.

%% The supervisor callback module the node loads (a user's own).
write_sup_cb(Dir) ->
    Src = "-module(ktls_examples_sup_cb).\n-behaviour(supervisor).\n-export([init/1]).\n"
          "init([]) ->\n"
          "    {ok, {#{strategy => one_for_one},\n"
          "          [ktls_filter_logger:child_spec(ktls_example_logger, [], 1)]}}.\n",
    File = filename:join(Dir, "ktls_examples_sup_cb.erl"),
    ok = file:write_file(File, Src),
    {ok, _} = compile:file(File, [{outdir, Dir}, report]),
    ok.
