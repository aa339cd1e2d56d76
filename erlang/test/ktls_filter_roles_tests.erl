%% ktls_filter_roles:resolve/2, as a connection's input process uses it: a
%% burst of messages to one new process costs one look-up (role/1), and a
%% process found gone is looked up again at every message (a pid can name a
%% process that is spawned later).
-module(ktls_filter_roles_tests).

-include_lib("eunit/include/eunit.hrl").

-define(ROLE, {ktls_filter_roles, role, 1}).

resolve_test_() ->
    {setup,
     fun() ->
             {module, _} = code:ensure_loaded(ktls_filter_roles),
             1 = erlang:trace_pattern(?ROLE, true, [call_count])
     end,
     fun(_) -> erlang:trace_pattern(?ROLE, false, [call_count]) end,
     [fun reuse_takes_the_answer_of_learn/0,
      fun a_gone_process_is_looked_up_again/0,
      fun a_slot_of_another_process_is_not_reused/0]}.

%% Run in a fresh process: the slots live in its process dictionary.
in_process(Fun) ->
    {Pid, Ref} = spawn_monitor(fun() -> exit({done, Fun()}) end),
    receive {'DOWN', Ref, process, Pid, {done, R}} -> R;
            {'DOWN', Ref, process, Pid, Other} -> error(Other)
    end.

look_ups() ->
    {call_count, N} = erlang:trace_info(?ROLE, call_count),
    N.

reuse_takes_the_answer_of_learn() ->
    P = spawn(fun() -> receive stop -> ok end end),
    {Roles, Calls} = in_process(
                       fun() ->
                               N0 = look_ups(),
                               R = [ktls_filter_roles:resolve(P, {learn, 3}) |
                                    [ktls_filter_roles:resolve(P, {reuse, 3})
                                     || _ <- lists:seq(1, 50)]],
                               {R, look_ups() - N0}
                       end),
    P ! stop,
    ?assertEqual(lists:duplicate(51, user), Roles),
    ?assertEqual(1, Calls).

a_gone_process_is_looked_up_again() ->
    {P, Ref} = spawn_monitor(fun() -> ok end),
    receive {'DOWN', Ref, process, P, _} -> ok end,
    {Roles, Calls} = in_process(
                       fun() ->
                               N0 = look_ups(),
                               R = [ktls_filter_roles:resolve(P, {learn, 0}),
                                    ktls_filter_roles:resolve(P, {reuse, 0}),
                                    ktls_filter_roles:resolve(P, {reuse, 0})],
                               {R, look_ups() - N0}
                       end),
    ?assertEqual([gone, gone, gone], Roles),
    ?assertEqual(3, Calls).

a_slot_of_another_process_is_not_reused() ->
    P = spawn(fun() -> receive stop -> ok end end),
    Calls = in_process(
              fun() ->
                      N0 = look_ups(),
                      user = ktls_filter_roles:resolve(self(), {learn, 1}),
                      %% slot 1 holds self(): P is looked up, then kept there
                      user = ktls_filter_roles:resolve(P, {reuse, 1}),
                      user = ktls_filter_roles:resolve(P, {reuse, 1}),
                      look_ups() - N0
              end),
    P ! stop,
    ?assertEqual(2, Calls).
