%% A minimal io server (group leader) for ktls_attack_SUITE: answers the io
%% requests of OTP's io module the way group.erl and standard_error do,
%% including calling M:F(A) for {put_chars, Enc, M, F, A}, and keeps the
%% text it was asked to print.
-module(ktls_attack_io).

-export([start/0, output/1]).

%% @doc Starts the server registered as ktls_attack_io; returns its pid.
-spec start() -> pid().
start() ->
    Pid = spawn(fun() -> loop([]) end),
    true = register(?MODULE, Pid),
    Pid.

%% @doc The text printed so far (on the node of the server).
-spec output(pid()) -> binary().
output(Pid) ->
    Ref = make_ref(),
    Pid ! {output, self(), Ref},
    receive {Ref, Out} -> Out after 5000 -> error(timeout) end.

loop(Out) ->
    receive
        {io_request, From, ReplyAs, Request} ->
            {Reply, Out1} = request(Request, Out),
            From ! {io_reply, ReplyAs, Reply},
            loop(Out1);
        {output, From, Ref} ->
            From ! {Ref, iolist_to_binary(lists:reverse(Out))},
            loop(Out);
        _ ->
            loop(Out)
    end.

request({put_chars, Enc, Chars}, Out) ->
    {ok, [unicode:characters_to_binary(Chars, Enc) | Out]};
request({put_chars, Enc, M, F, A}, Out) ->
    try apply(M, F, A) of
        Chars -> request({put_chars, Enc, Chars}, Out)
    catch
        _:_ -> {{error, put_chars}, Out}
    end;
request({requests, Reqs}, Out) ->
    lists:foldl(fun(R, {ok, O}) -> request(R, O);
                   (_, Err) -> Err
                end, {ok, Out}, Reqs);
request({get_geometry, _}, Out) ->
    {{error, enotsup}, Out};
request(_Other, Out) ->
    {{error, request}, Out}.
