%% A process for ktls_attack_SUITE's alias_requests case: it makes an
%% alias (erlang:alias/0), hands it out, and keeps every message it gets
%% (through the alias, its pid or its registered name), so the suite can
%% tell which message shapes reached it. An `app' holder is an ordinary
%% application process; a `system' holder makes the kernel application
%% master its group leader first, which makes it one of OTP's system
%% processes as the filter defines them (like a kernel process that gave
%% its alias away in a call to another node).
-module(ktls_attack_alias).

-export([start/1, received/1]).

%% @doc Starts a holder (not linked), registered as ktls_attack_alias (app)
%% or ktls_attack_alias_system (system); returns its pid and its alias.
-spec start(app | system) -> {pid(), reference()}.
start(Kind) ->
    Parent = self(),
    Ref = make_ref(),
    Pid = spawn(fun() ->
                        case Kind of
                            system ->
                                true = group_leader(application_controller:get_master(kernel),
                                                    self()),
                                true = register(ktls_attack_alias_system, self());
                            app ->
                                true = register(?MODULE, self())
                        end,
                        Alias = alias(),
                        Parent ! {Ref, Alias},
                        loop([])
                end),
    receive
        {Ref, Alias} -> {Pid, Alias}
    after 5000 ->
            error(alias_holder_start)
    end.

%% @doc The messages the holder got since the last call, oldest first (on
%% its node).
-spec received(pid()) -> [term()].
received(Pid) ->
    Ref = make_ref(),
    Pid ! {'$ktls_attack_alias_received', self(), Ref},
    receive
        {Ref, Msgs} -> Msgs
    after 5000 ->
            error(alias_holder_timeout)
    end.

loop(Msgs) ->
    receive
        {'$ktls_attack_alias_received', From, Ref} when is_pid(From), node(From) =:= node() ->
            From ! {Ref, lists:reverse(Msgs)},
            loop([]);
        Msg ->
            loop([Msg | Msgs])
    end.
