// Result type shared by the carrier: a value or an Error carrying a reason.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace ktls::carrier {

// Why something failed: an errno value (0 when not a system error) and text
// that names the operation, e.g. "connect 127.0.0.1:4370: Connection refused".
struct Error {
  int code = 0;
  std::string what;

  static Error from_errno(int err, const std::string& op) {
    return Error{err, op + ": " + std::strerror(err)};
  }
  static Error message(std::string text) { return Error{0, std::move(text)}; }
};

// Either a T or an Error. Small on purpose: no exceptions cross our APIs.
template <class T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T&& take() { return std::move(std::get<0>(v_)); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result of an operation that has no value.
template <>
class Result<void> {
 public:
  Result() = default;
  Result(Error error)
      : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

}  // namespace ktls::carrier
