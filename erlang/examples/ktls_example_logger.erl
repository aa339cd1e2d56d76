%% An example ktls_filter_logger: counts inbound dist messages per peer node
%% and kind (ktls_filter_control:kind/1); counts/1 reads them.
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

-export([init/2, handle_batch/4, handle_control_event/4, handle_payload_event/5,
         handle_info/2, counts/1]).

%% @doc #{{Node, Kind} => Count} and dropped events of worker N.
counts(N) ->
    Name = ktls_filter_logger:child_name(?MODULE, N),
    Ref = make_ref(),
    Name ! {counts, self(), Ref},
    receive {Ref, Counts} -> Counts after 5000 -> timeout end.

init(_Options, _N) ->
    {ok, #{counts => #{}, dropped => 0}}.

handle_batch(_Size, Drop, Events, #{dropped := D} = State) ->
    {handle_events, Events, State#{dropped := D + Drop}}.

handle_control_event(_Time, Node, Control, State) ->
    {cont, count(Node, Control, State)}.

handle_payload_event(_Time, Node, Control, _Payload, State) ->
    {cont, count(Node, Control, State)}.

handle_info({counts, From, Ref}, #{counts := C, dropped := D} = State) ->
    From ! {Ref, C#{dropped => D}},
    {cont, State};
handle_info(_, State) ->
    {cont, State}.

count(Node, Control, #{counts := C} = State) ->
    Key = {Node, ktls_filter_control:kind(Control)},
    State#{counts := maps:update_with(Key, fun(N) -> N + 1 end, 1, C)}.
