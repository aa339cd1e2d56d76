%% A ktls_filter_logger for the filter suite: forwards every event to the
%% process registered as ktls_ct_collector; sleeps per batch when asked to
%% (to fill its queue).
-module(ktls_ct_logger).
-behaviour(ktls_filter_logger).

-export([init/2, handle_batch/4, handle_control_event/4, handle_payload_event/5,
         handle_info/2]).

init(_Options, _N) ->
    {ok, #{delay => 0}}.

handle_batch(_Size, Drop, Events, State = #{delay := Delay}) ->
    Drop > 0 andalso (catch ktls_ct_collector ! {dropped, Drop}),
    timer:sleep(Delay),
    {handle_events, Events, State}.

handle_control_event(_Time, Node, Control, State) ->
    catch ktls_ct_collector ! {event, Node, Control, none},
    {cont, State}.

handle_payload_event(Time, Node, Control, Payload, State) ->
    catch ktls_ct_collector ! {event, Node, Control, Payload},
    catch ktls_ct_collector ! {event_time, Time},
    {cont, State}.

handle_info({delay, Ms}, State) ->
    {cont, State#{delay => Ms}};
handle_info(_Info, State) ->
    {cont, State}.
