%% @doc Named node-wide counters kept in `persistent_term' (for counts that
%% do not live in the NIF): `new/2' once when the carrier starts, `add/2'
%% from any process, `get/1' as a map. Before `new/2', `add/2' is a no-op
%% and `get/1' reads zeros for the keys it is given.
-module(ktls_filter_counters).

-export([new/2, add/2, get/2]).

key(Name) -> {?MODULE, Name}.

%% @doc Makes the counters Keys under Name (once: a second call keeps them).
-spec new(atom(), [atom()]) -> ok.
new(Name, Keys) ->
    case persistent_term:get(key(Name), undefined) of
        undefined ->
            Index = maps:from_list(lists:zip(Keys, lists:seq(1, length(Keys)))),
            persistent_term:put(key(Name), {Index, counters:new(length(Keys), [write_concurrency])});
        _ ->
            ok
    end.

%% @doc Adds one to counter Key of Name.
-spec add(atom(), atom()) -> ok.
add(Name, Key) ->
    case persistent_term:get(key(Name), undefined) of
        undefined -> ok;
        {Index, C} -> counters:add(C, maps:get(Key, Index), 1)
    end.

%% @doc The counters Keys of Name (zero before `new/2').
-spec get(atom(), [atom()]) -> #{atom() => non_neg_integer()}.
get(Name, Keys) ->
    case persistent_term:get(key(Name), undefined) of
        undefined -> maps:from_list([{K, 0} || K <- Keys]);
        {Index, C} -> maps:from_list([{K, counters:get(C, maps:get(K, Index))} || K <- Keys])
    end.
