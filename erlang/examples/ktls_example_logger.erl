%% An example ktls_filter_logger: counts inbound dist messages per peer node
%% and kind (ktls_filter_control:kind/1), and per verdict (keep, drop,
%% would_drop, ask, resolve); counts/1 reads them, and the kinds and
%% verdicts of the latest events in arrival order.
%%
%% Loggers are started by the user, under the user's own supervisor:
%%
%%   init([]) ->
%%       {ok, {#{strategy => one_for_one},
%%             [ktls_filter_logger:child_spec(ktls_example_logger, [], 1)]}}.
%%
%% (or at the shell: ktls_filter_logger:start_link(ktls_example_logger, [], 1)).
%% The worker registers as ktls_example_logger_1. Events arrive in batches,
%% at most `logger_capacity' waiting (older ones are counted as dropped and
%% reported in the next batch's Drop), without delaying traffic.
-module(ktls_example_logger).
-behaviour(ktls_filter_logger).

-export([init/2, handle_batch/4, handle_control_event/5, handle_payload_event/6,
         handle_info/2, counts/1]).

%% @doc #{{Node, Kind} => Count, {verdict, Verdict} => Count, dropped => N,
%% last => [{Kind, Verdict}]} of worker N (last: the 10 latest events,
%% oldest first).
counts(N) ->
    Name = ktls_filter_logger:child_name(?MODULE, N),
    Ref = make_ref(),
    Name ! {counts, self(), Ref},
    receive {Ref, Counts} -> Counts after 5000 -> timeout end.

init(_Options, _N) ->
    {ok, #{counts => #{}, dropped => 0, last => []}}.

handle_batch(_Size, Drop, Events, #{dropped := D} = State) ->
    {handle_events, Events, State#{dropped := D + Drop}}.

handle_control_event(_Time, Node, Control, Verdict, State) ->
    {cont, count(Node, Control, Verdict, State)}.

handle_payload_event(_Time, Node, Control, _Payload, Verdict, State) ->
    {cont, count(Node, Control, Verdict, State)}.

handle_info({counts, From, Ref}, #{counts := C, dropped := D, last := L} = State) ->
    From ! {Ref, C#{dropped => D, last => lists:reverse(L)}},
    {cont, State};
handle_info(_, State) ->
    {cont, State}.

count(Node, Control, Verdict, #{counts := C0, last := L} = State) ->
    Kind = ktls_filter_control:kind(Control),
    Add = fun(K, C) -> maps:update_with(K, fun(N) -> N + 1 end, 1, C) end,
    C = Add({verdict, Verdict}, Add({Node, Kind}, C0)),
    State#{counts := C, last := lists:sublist([{Kind, Verdict} | L], 10)}.
