%% @doc Names for the distribution control messages that handlers
%% (ktls_filter_handler) and loggers (ktls_filter_logger) are given.
%%
%% The filter passes each control message as OTP 25 puts it on the wire: a
%% tuple whose first element is the operation number (ERTS' dist.h), for
%% example `{29, ReqId, From, GroupLeader, {M, F, Arity}, Opts}' for a spawn
%% request. `kind/1' names the operation and `to_map/1' names its fields:
%%
%% ```
%% link             {1, From, To}                 send_sender      {22, From, To}
%% send             {2, Unused, To}               send_sender_tt   {23, From, To, Token}
%% exit             {3, From, To, Reason}         payload_exit     {24, From, To}
%% unlink           {4, From, To}                 payload_exit_tt  {25, From, To, Token}
%% node_link        {5}                           payload_exit2    {26, From, To}
%% reg_send         {6, From, Unused, ToName}     payload_exit2_tt {27, From, To, Token}
%% group_leader     {7, From, To}                 payload_monitor_p_exit {28, From, To, Ref}
%% exit2            {8, From, To, Reason}         spawn_request    {29, ReqId, From, GroupLeader, MFA, Opts}
%% send_tt          {12, Unused, To, Token}       spawn_request_tt {30, ReqId, From, GroupLeader, MFA, Opts, Token}
%% exit_tt          {13, From, To, Token, Reason} spawn_reply      {31, ReqId, To, Flags, Result}
%% reg_send_tt      {16, From, Unused, ToName, Token} spawn_reply_tt {32, ReqId, To, Flags, Result, Token}
%% exit2_tt         {18, From, To, Token, Reason} alias_send       {33, From, Alias}
%% monitor_p        {19, From, To, Ref}           alias_send_tt    {34, From, Alias, Token}
%% demonitor_p      {20, From, To, Ref}           unlink_id        {35, Id, From, To}
%% monitor_p_exit   {21, From, To, Ref, Reason}   unlink_id_ack    {36, Id, From, To}
%% '''
%%
%% The payload (classify/4, payload events) is the message itself for the
%% send kinds, the exit reason for the payload_exit kinds, and the argument
%% list for spawn requests.
-module(ktls_filter_control).

-export([kind/1, to_map/1, kinds/0]).

-type kind() :: link | send | exit | unlink | node_link | reg_send | group_leader | exit2
              | send_tt | exit_tt | reg_send_tt | exit2_tt | monitor_p | demonitor_p
              | monitor_p_exit | send_sender | send_sender_tt | payload_exit
              | payload_exit_tt | payload_exit2 | payload_exit2_tt | payload_monitor_p_exit
              | spawn_request | spawn_request_tt | spawn_reply | spawn_reply_tt | alias_send
              | alias_send_tt | unlink_id | unlink_id_ack | unknown.
-export_type([kind/0]).

%% {Operation, Kind, Field names after the operation}
fields() ->
    [{1, link, [from, to]},
     {2, send, [unused, to]},
     {3, exit, [from, to, reason]},
     {4, unlink, [from, to]},
     {5, node_link, []},
     {6, reg_send, [from, unused, to]},
     {7, group_leader, [from, to]},
     {8, exit2, [from, to, reason]},
     {12, send_tt, [unused, to, token]},
     {13, exit_tt, [from, to, token, reason]},
     {16, reg_send_tt, [from, unused, to, token]},
     {18, exit2_tt, [from, to, token, reason]},
     {19, monitor_p, [from, to, ref]},
     {20, demonitor_p, [from, to, ref]},
     {21, monitor_p_exit, [from, to, ref, reason]},
     {22, send_sender, [from, to]},
     {23, send_sender_tt, [from, to, token]},
     {24, payload_exit, [from, to]},
     {25, payload_exit_tt, [from, to, token]},
     {26, payload_exit2, [from, to]},
     {27, payload_exit2_tt, [from, to, token]},
     {28, payload_monitor_p_exit, [from, to, ref]},
     {29, spawn_request, [req_id, from, group_leader, mfa, opts]},
     {30, spawn_request_tt, [req_id, from, group_leader, mfa, opts, token]},
     {31, spawn_reply, [req_id, to, flags, result]},
     {32, spawn_reply_tt, [req_id, to, flags, result, token]},
     {33, alias_send, [from, to]},
     {34, alias_send_tt, [from, to, token]},
     {35, unlink_id, [id, from, to]},
     {36, unlink_id_ack, [id, from, to]}].

%% @doc Every kind with its operation number.
-spec kinds() -> [{pos_integer(), kind()}].
kinds() ->
    [{Op, Kind} || {Op, Kind, _} <- fields()].

%% @doc The kind of a control message.
-spec kind(tuple()) -> kind().
kind(Control) when is_tuple(Control), tuple_size(Control) >= 1 ->
    case lists:keyfind(element(1, Control), 1, fields()) of
        {_, Kind, _} -> Kind;
        false -> unknown
    end;
kind(_) ->
    unknown.

%% @doc The control message as a map: `kind' and its named fields (`to' is
%% a pid, a registered name or an alias; `mfa' is {M, F, Arity}).
-spec to_map(tuple()) -> #{kind := kind(), atom() => term()}.
to_map(Control) when is_tuple(Control), tuple_size(Control) >= 1 ->
    case lists:keyfind(element(1, Control), 1, fields()) of
        {_, Kind, Names} when length(Names) =:= tuple_size(Control) - 1 ->
            maps:from_list([{kind, Kind} |
                            lists:zip(Names, tl(tuple_to_list(Control)))]);
        _ ->
            #{kind => unknown, control => Control}
    end;
to_map(Control) ->
    #{kind => unknown, control => Control}.
