%% @doc Behaviour and worker process for logging inbound dist messages.
%%
%% Loggers are lossy and batched: the filter engine hands each logger the
%% events of a received batch unless the logger already has `capacity'
%% events waiting (ktls_filter:logger_set_capacity/1, 0 = unbounded); events
%% that do not fit are counted as dropped and reported in the next batch.
%% Loggers do not delay traffic and see no ordering guarantee against it;
%% the events of one connection arrive in the order the messages did, across
%% batches too (the connection's input process sends the batches).
%%
%% Each event carries the filter's verdict: `keep', `drop', `would_drop'
%% (kept in monitor mode or from a trusted peer; the policy would have
%% dropped it), `ask' (the handler decides) or `resolve' (the receiver's
%% role decides; the outcome shows in the counters). Implement
%% handle_control_event/5 and handle_payload_event/6 to get it, or the
%% older handle_control_event/4 and handle_payload_event/5 without it.
%%
%% Start a worker under your supervisor with child_spec/3.
-module(ktls_filter_logger).

-export([start_link/3, child_spec/3, child_name/2, init_worker/4]).

-type verdict() :: keep | drop | would_drop | ask | resolve.
-type event() :: {control, integer(), node(), tuple(), verdict()}
               | {payload, integer(), node(), tuple(), term(), verdict()}.
-export_type([event/0, verdict/0]).

-callback init(Options :: term(), WorkerNumber :: pos_integer()) -> {ok, State :: term()}.
%% @doc A batch arrived: Size events, Drop events lost since the last batch.
%% Return the events to hand to the per-event callbacks.
-callback handle_batch(Size :: non_neg_integer(), Drop :: non_neg_integer(),
                       Events :: [event()], State :: term()) ->
    {handle_events, [event()], State :: term()}.
-callback handle_control_event(Time :: integer(), node(), Control :: tuple(), verdict(),
                               State :: term()) ->
    {cont, State :: term()}.
-callback handle_payload_event(Time :: integer(), node(), Control :: tuple(), Payload :: term(),
                               verdict(), State :: term()) ->
    {cont, State :: term()}.
-callback handle_control_event(Time :: integer(), node(), Control :: tuple(), State :: term()) ->
    {cont, State :: term()}.
-callback handle_payload_event(Time :: integer(), node(), Control :: tuple(), Payload :: term(),
                               State :: term()) ->
    {cont, State :: term()}.
%% @doc Any other message to the worker.
-callback handle_info(Info :: term(), State :: term()) -> {cont, State :: term()}.
-optional_callbacks([handle_info/2, handle_control_event/5, handle_payload_event/6,
                     handle_control_event/4, handle_payload_event/5]).

%% @doc Registered name of worker N of Module.
-spec child_name(module(), pos_integer()) -> atom().
child_name(Module, N) ->
    list_to_atom(atom_to_list(Module) ++ "_" ++ integer_to_list(N)).

-spec child_spec(module(), term(), pos_integer()) -> supervisor:child_spec().
child_spec(Module, Options, N) ->
    #{id => {?MODULE, Module, N},
      start => {?MODULE, start_link, [Module, Options, N]},
      restart => permanent, type => worker, modules => [?MODULE, Module]}.

-spec start_link(module(), term(), pos_integer()) -> {ok, pid()} | {error, term()}.
start_link(Module, Options, N) ->
    proc_lib:start_link(?MODULE, init_worker, [self(), Module, Options, N]).

-spec init_worker(pid(), module(), term(), pos_integer()) -> no_return().
init_worker(Parent, Module, Options, N) ->
    true = register(child_name(Module, N), self()),
    {ok, State} = Module:init(Options, N),
    {ok, Logger} = ktls_filter_nif:logger_open(self()),
    proc_lib:init_ack(Parent, {ok, self()}),
    loop(Logger, Module, State).

loop(Logger, Module, State0) ->
    receive
        {ktls_logger_batch, Logger, Drop, Events} ->
            Size = length(Events),
            {handle_events, ToHandle, State1} = Module:handle_batch(Size, Drop, Events, State0),
            State = lists:foldl(fun(E, S) -> handle_event(Module, E, S) end, State1, ToHandle),
            ok = ktls_filter_nif:logger_ack(Logger, Size),
            loop(Logger, Module, State);
        Info ->
            State = case erlang:function_exported(Module, handle_info, 2) of
                        true ->
                            {cont, S} = Module:handle_info(Info, State0),
                            S;
                        false ->
                            State0
                    end,
            loop(Logger, Module, State)
    end.

handle_event(Module, {control, Time, Node, Control, Verdict}, State) ->
    {cont, S} = case erlang:function_exported(Module, handle_control_event, 5) of
                    true -> Module:handle_control_event(Time, Node, Control, Verdict, State);
                    false -> Module:handle_control_event(Time, Node, Control, State)
                end,
    S;
handle_event(Module, {payload, Time, Node, Control, Payload, Verdict}, State) ->
    {cont, S} = case erlang:function_exported(Module, handle_payload_event, 6) of
                    true -> Module:handle_payload_event(Time, Node, Control, Payload, Verdict, State);
                    false -> Module:handle_payload_event(Time, Node, Control, Payload, State)
                end,
    S.
