%% An example ktls_filter_handler: lets the nodes named with
%% `-ktls_example_trusted NODE...' on the command line (or in the
%% application environment `{ktls_example, trusted_nodes}') run
%% rpc/erpc/spawn requests the default policy refuses, and drops them from
%% everyone else. (Without TLS a node name is no proof of identity: anyone
%% with the cookie can take it.)
%%
%% Use it with
%%   erl -pa _build/lib/ktls_filter/ebin -pa DIR_OF_THIS_BEAM -proto_dist ktls_filter \
%%       -ktls_filter handler ktls_example_handler -ktls_example_trusted ops@10.0.0.5
%%
%% The filter asks a handler only about messages its policy marks `unsafe'
%% (hint `unsafe'); `safe' and `drop' hints are given to handlers only in
%% monitor mode, for information. classify/3 gets control messages without
%% payload, classify/4 those with one (a message, an exit reason, a spawn
%% request's arguments). Control is the wire tuple: ktls_filter_control
%% names it. Return `keep' or `drop'; a crash counts as `drop' and is logged.
%% Callbacks run in the connection's input process in order with its
%% traffic: keep them fast, and never call the peer from them.
-module(ktls_example_handler).
-behaviour(ktls_filter_handler).

-export([classify/3, classify/4]).

classify(Hint, Node, Control) ->
    decide(Hint, Node, ktls_filter_control:to_map(Control), none).

classify(Hint, Node, Control, Payload) ->
    decide(Hint, Node, ktls_filter_control:to_map(Control), Payload).

decide(unsafe, Node, #{kind := Kind} = Control, _Payload) ->
    case trusted(Node) of
        true ->
            logger:info("ktls_example_handler: ~p from trusted ~p kept: ~0p",
                        [Kind, Node, maps:get(mfa, Control, maps:get(to, Control, none))]),
            keep;
        false ->
            drop
    end;
decide(_Hint, _Node, _Control, _Payload) ->
    %% monitor mode shows safe and drop hints too: the policy's verdict stands
    keep.

trusted(Node) ->
    FromArgs = case init:get_argument(ktls_example_trusted) of
                   {ok, Lists} -> [list_to_atom(N) || N <- lists:append(Lists)];
                   error -> []
               end,
    lists:member(Node, FromArgs ++ application:get_env(ktls_example, trusted_nodes, [])).
