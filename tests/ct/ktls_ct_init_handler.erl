%% A ktls_filter_handler with spawn_request_init/4 for the filter suite:
%% erpc calls of os:getpid/0 run, every other spawn request is refused in
%% the spawned process (the way the ElixirConf 2023 talk shows it).
-module(ktls_ct_init_handler).
-behaviour(ktls_filter_handler).

-export([classify/3, classify/4, spawn_request_init/4, unauthorized/0]).

classify(_Hint, _Node, _Control) ->
    drop.

classify(_Hint, _Node, _Control, _Payload) ->
    drop.

spawn_request_init(_Node, erpc, execute_call, [Ref, os, getpid, []] = A) ->
    _ = Ref,
    apply(erpc, execute_call, A);
spawn_request_init(_Node, erpc, execute_call, [Ref, _M, _F, _A]) ->
    erpc:execute_call(Ref, ?MODULE, unauthorized, []);
spawn_request_init(_Node, _M, _F, _A) ->
    unauthorized().

unauthorized() ->
    exit(unauthorized).
