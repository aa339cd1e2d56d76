%% A ktls_filter_handler for the filter suite: lets erpc calls of
%% os:getpid/0 through, crashes on erlang:error(crash_me), drops the rest.
-module(ktls_ct_handler).
-behaviour(ktls_filter_handler).

-export([classify/3, classify/4]).

classify(_Hint, _Node, _Control) ->
    drop.

classify(_Hint, _Node, Control, [_Ref, os, getpid, []]) when element(1, Control) =:= 29 ->
    keep;
classify(_Hint, _Node, _Control, [_Ref, erlang, error, [crash_me]]) ->
    error(handler_crashed_on_purpose);
classify(_Hint, _Node, _Control, _Payload) ->
    drop.
