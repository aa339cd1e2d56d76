%% EUnit tests of the control message names given to handlers and loggers.
-module(ktls_filter_control_tests).
-include_lib("eunit/include/eunit.hrl").

names_test() ->
    ?assertEqual(reg_send, ktls_filter_control:kind({6, self(), '', rex})),
    ?assertEqual(#{kind => reg_send, from => self(), unused => '', to => rex},
                 ktls_filter_control:to_map({6, self(), '', rex})),
    Ref = make_ref(),
    ?assertMatch(#{kind := spawn_request, req_id := Ref, mfa := {os, cmd, 1}, opts := []},
                 ktls_filter_control:to_map({29, Ref, self(), self(), {os, cmd, 1}, []})),
    ?assertEqual(alias_send, ktls_filter_control:kind({33, self(), Ref})).

unknown_test() ->
    ?assertEqual(unknown, ktls_filter_control:kind({99, x})),
    ?assertEqual(#{kind => unknown, control => {2}}, ktls_filter_control:to_map({2})),
    ?assertEqual(unknown, ktls_filter_control:kind(not_a_tuple)).

every_kind_is_named_once_test() ->
    Kinds = ktls_filter_control:kinds(),
    ?assertEqual(30, length(Kinds)),
    ?assertEqual(length(Kinds), length(lists:usort([K || {_, K} <- Kinds]))).
