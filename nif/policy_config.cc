#include "nif/policy_config.h"

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

#include "nif/loggers.h"
#include "nif/options.h"

namespace ktls::nif {
namespace {

struct PolicyState {
  std::mutex mu;
  std::shared_ptr<const filter::Policy> policy = std::make_shared<filter::Policy>();
  std::shared_ptr<const filter::Policy> trusted;  // policy_for(true), made on demand
  std::atomic<uint64_t> generation{1};
  std::atomic<uint64_t> inspect_switches{0};
  std::atomic<uint64_t> mode_switches{0};
};
PolicyState& policy_state() {
  static PolicyState s;
  return s;
}

}  // namespace

std::shared_ptr<const filter::Policy> current_policy() {
  PolicyState& s = policy_state();
  std::lock_guard lock(s.mu);
  return s.policy;
}

uint64_t policy_generation() { return policy_state().generation.load(std::memory_order_acquire); }

std::shared_ptr<const filter::Policy> policy_for(bool trusted) {
  if (!trusted) return current_policy();
  PolicyState& s = policy_state();
  std::lock_guard lock(s.mu);
  if (!s.trusted) {
    auto p = std::make_shared<filter::Policy>(*s.policy);
    if (p->mode == filter::Mode::Enforce) {
      // Nothing is dropped for what it asks, but memory stays bounded.
      p->mode = filter::Mode::Monitor;
      p->limits_in_monitor = true;
    }
    p->handler = false;
    p->handler_spawn_init = false;
    s.trusted = std::move(p);
  }
  return s.trusted;
}

bool configure_policy(ErlNifEnv* env, ERL_NIF_TERM map, std::string* key, std::string* why) {
  PolicyState& s = policy_state();
  auto p = std::make_shared<filter::Policy>(*current_policy());
  uint64_t logger_capacity = 0;
  options::Targets targets{.policy = p.get(), .logger_capacity = &logger_capacity};
  if (!options::read(env, map, options::Group::Filter, targets, key, why)) return false;
  set_logger_capacity(logger_capacity);
  std::lock_guard lock(s.mu);
  if (p->inspect != s.policy->inspect) s.inspect_switches++;
  if (p->mode != s.policy->mode) s.mode_switches++;
  s.policy = std::move(p);
  s.trusted.reset();
  s.generation.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

uint64_t policy_inspect_switches() { return policy_state().inspect_switches; }

uint64_t policy_mode_switches() { return policy_state().mode_switches; }

}  // namespace ktls::nif
