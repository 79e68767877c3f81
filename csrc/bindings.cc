// Python module pccheck._core. Every call that blocks, copies or does I/O
// releases the GIL.
#include <Python.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crc32c.h"
#include "engine.h"
#include "errors.h"
#include "file_lock.h"
#include "recovery.h"

namespace py = pybind11;
using namespace pccheck;

namespace {

// A C-contiguous view of a Python buffer; released with the GIL held.
class BufferView {
 public:
  BufferView(py::handle obj, bool writable) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj.ptr(), &view_, flags) != 0) throw py::error_already_set();
  }
  ~BufferView() { PyBuffer_Release(&view_); }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  uint8_t* data() const { return static_cast<uint8_t*>(view_.buf); }
  uint64_t size() const { return static_cast<uint64_t>(view_.len); }

 private:
  Py_buffer view_;
};

// One staging buffer exposed through the buffer protocol. It holds the pool,
// so a memoryview stays valid after the Store is closed or collected.
struct StagingBuffer {
  std::shared_ptr<BufferPool> pool;
  uint64_t index;
};

uint32_t crc_of(py::handle data, uint32_t crc, bool portable) {
  BufferView v(data, false);
  py::gil_scoped_release nogil;
  return portable ? crc32c_portable(v.data(), v.size(), crc) : crc32c(v.data(), v.size(), crc);
}

py::dict geometry_dict(const Geometry& g) {
  py::dict d;
  d["path"] = g.path;
  d["slot_count"] = g.slot_count;
  d["slot_size"] = g.slot_size;
  d["table_bytes"] = g.table_bytes;
  d["chunk_size"] = g.chunk_size;
  d["keep"] = g.keep;
  d["max_async"] = g.max_async;
  d["ring_entries"] = g.ring_entries;
  d["buffer_count"] = g.buffer_count;
  d["buffer_size"] = g.chunk_size;
  d["threads"] = g.threads;
  d["file_size"] = g.file_size;
  d["created_ns"] = g.created_ns;
  d["durability"] = durability_name(g.durability);
  d["created"] = g.created;
  d["adopted"] = g.adopted;
  return d;
}

py::dict scan_dict(const ScanResult& r) {
  const Superblock& sb = r.sb;
  py::dict geo;
  geo["slot_count"] = sb.slot_count;
  geo["slot_size"] = sb.slot_size;
  geo["table_bytes"] = sb.table_bytes;
  geo["ring_entries"] = sb.ring_entries;
  geo["ring_offset"] = sb.ring_offset;
  geo["slots_offset"] = sb.slots_offset;
  geo["file_size"] = sb.file_size;
  geo["keep"] = sb.keep;
  geo["max_async"] = sb.max_async;
  geo["created_ns"] = sb.created_ns;
  py::list entries;
  for (const RingEntry& e : r.entries) {
    py::dict d;
    d["index"] = e.index;
    if (e.has_fields) {
      d["seq"] = e.rec.seq;
      d["slot"] = e.rec.slot;
      d["step"] = e.rec.step;
      d["payload_len"] = e.rec.payload_len;
      d["chunk_size"] = e.rec.chunk_size;
      d["n_chunks"] = e.rec.n_chunks;
      d["time_ns"] = e.rec.time_ns;
    } else {
      for (const char* k : {"seq", "slot", "step", "payload_len", "chunk_size", "n_chunks", "time_ns"})
        d[k] = py::none();
    }
    d["valid"] = e.valid;
    d["reason"] = e.reason;
    entries.append(d);
  }
  py::list skipped;
  for (const auto& s : r.skipped) skipped.append(py::make_tuple(s.first, s.second));
  py::dict out;
  out["geometry"] = geo;
  out["entries"] = entries;
  out["latest"] = r.latest ? py::cast(*r.latest) : py::none();
  out["skipped"] = skipped;
  return out;
}

py::dict stats_dict(const Stats& s) {
  py::dict d;
  d["buffers_total"] = s.buffers_total;
  d["buffers_free"] = s.buffers_free;
  d["slots_free"] = s.slots_free;
  d["in_flight"] = s.in_flight;
  d["committed"] = s.committed;
  d["dropped"] = s.dropped;
  d["failed"] = s.failed;
  d["aborted"] = s.aborted;
  d["bytes_written"] = s.bytes_written;
  d["grown"] = s.grown;
  return d;
}

LockMode parse_lock_mode(const std::string& name) {
  if (name == "auto") return LockMode::kAuto;
  if (name == "flock") return LockMode::kFlock;
  if (name == "lease") return LockMode::kLease;
  throw std::invalid_argument("mode must be 'auto', 'flock' or 'lease', not '" + name + "'");
}

const char* lock_mode_name(LockMode m) { return m == LockMode::kLease ? "lease" : "flock"; }  // once held

py::dict owner_dict(const LockOwner& o) {
  py::dict d;
  d["host"] = o.host;
  d["boot"] = o.boot;
  d["pid"] = o.pid;
  d["start_ticks"] = o.start_ticks;
  d["started"] = o.started_s;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pccheck storage engine: slots, writer threads, commit protocol, recovery";

  auto& core = py::register_exception<CoreError>(m, "CoreError", PyExc_RuntimeError);
  // Registered after the base, so these translators are tried first.
  py::register_exception<LockedError>(m, "LockedError", core);
  py::register_exception<NoSpaceError>(m, "NoSpaceError", core);
  py::register_exception<FormatError>(m, "FormatError", core);
  py::register_exception<CorruptError>(m, "CorruptError", core);
  py::register_exception<WriteError>(m, "WriteError", core);

  py::class_<StagingBuffer>(m, "_StagingBuffer", py::buffer_protocol())
      .def_buffer([](StagingBuffer& b) {
        return py::buffer_info(b.pool->data(b.index), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.pool->buffer_size())}, {1}, false);
      });

  py::class_<Store>(m, "Store")
      .def(py::init([](const std::string& path, uint64_t slot_size, uint64_t max_async, uint64_t keep,
                       uint64_t chunk_size, uint64_t threads, uint64_t memory_budget, const std::string& durability) {
             StoreOptions o;
             o.path = path;
             o.slot_size = slot_size;
             o.max_async = max_async;
             o.keep = keep;
             o.chunk_size = chunk_size;
             o.threads = threads;
             o.memory_budget = memory_budget;
             o.durability = parse_durability(durability);
             py::gil_scoped_release nogil;  // preallocation and the pre-faulting take time
             return std::make_unique<Store>(o);
           }),
           py::arg("path"), py::kw_only(), py::arg("slot_size"), py::arg("max_async"), py::arg("keep"),
           py::arg("chunk_size"), py::arg("threads"), py::arg("memory_budget"),
           py::arg("durability") = "auto")
      .def_property_readonly("geometry", [](const Store& s) { return geometry_dict(s.geometry()); })
      .def("begin", &Store::begin, py::arg("step"), py::arg("payload_len"), py::arg("block") = true,
           py::call_guard<py::gil_scoped_release>())
      .def(
          "write_host",
          [](Store& s, uint64_t seq, py::handle header, const std::vector<std::pair<uint64_t, uint64_t>>& segments) {
            BufferView h(header, false);
            std::vector<Store::Segment> parts{{h.data(), h.size()}};
            for (const auto& seg : segments)
              parts.push_back({reinterpret_cast<const void*>(static_cast<uintptr_t>(seg.first)), seg.second});
            py::gil_scoped_release nogil;
            s.write_host(seq, parts);
          },
          py::arg("seq"), py::arg("header"), py::arg("segments"))
      .def(
          "write_host_async",
          [](Store& s, uint64_t seq, py::handle header, const std::vector<std::pair<uint64_t, uint64_t>>& segments) {
            BufferView h(header, false);
            std::vector<uint8_t> head(h.data(), h.data() + h.size());
            std::vector<Store::Segment> parts;
            parts.reserve(segments.size());
            for (const auto& seg : segments)
              parts.push_back({reinterpret_cast<const void*>(static_cast<uintptr_t>(seg.first)), seg.second});
            py::gil_scoped_release nogil;
            s.write_host_async(seq, std::move(head), std::move(parts));
          },
          py::arg("seq"), py::arg("header"), py::arg("segments"))
      .def("wait_copied", &Store::wait_copied, py::call_guard<py::gil_scoped_release>())
      .def("acquire", &Store::acquire, py::call_guard<py::gil_scoped_release>())
      .def("release", &Store::release, py::arg("index"))
      .def(
          "buffer",
          [](Store& s, uint64_t index) {
            if (index >= s.pool()->count()) throw py::index_error("no staging buffer " + std::to_string(index));
            return py::memoryview(py::cast(StagingBuffer{s.pool(), index}));
          },
          py::arg("index"))
      .def(
          "buffer_address",
          [](Store& s, uint64_t index) {
            if (index >= s.pool()->count()) throw py::index_error("no staging buffer " + std::to_string(index));
            return reinterpret_cast<uintptr_t>(s.pool()->data(index));
          },
          py::arg("index"))
      .def("submit", &Store::submit, py::arg("seq"), py::arg("index"), py::arg("chunk_index"), py::arg("nbytes"),
           py::call_guard<py::gil_scoped_release>())
      .def("abort", &Store::abort, py::arg("seq"), py::arg("reason") = "aborted",
           py::call_guard<py::gil_scoped_release>())
      .def(
          "wait",
          [](Store& s, std::optional<uint64_t> seq, std::optional<double> timeout) {
            Outcome o;
            {
              py::gil_scoped_release nogil;
              o = s.wait(seq, timeout);
            }
            return std::string(outcome_name(o));
          },
          py::arg("seq") = py::none(), py::arg("timeout") = py::none())
      .def("latest", &Store::latest)
      .def_property_readonly("stats", [](const Store& s) { return stats_dict(s.stats()); })
      .def("close", &Store::close, py::call_guard<py::gil_scoped_release>())
      .def("__enter__", [](py::object self) { return self; })
      .def(
          "__exit__",
          [](Store& s, py::args) {
            py::gil_scoped_release nogil;
            s.close();
          })
      .def_property_readonly("lock_mode", [](const Store& s) { return lock_mode_name(s.lock_mode()); })
      .def(
          "_inject_write_error",
          [](Store& s, uint64_t after, int err) { s.inject_write_error(after, err); },
          py::arg("after_n_chunk_writes"), py::arg("errno") = EIO);

  // A lock on a file that also works where flock does not (file_lock.h);
  // acquired by the constructor, released by release() or the with block.
  py::class_<FileLock>(m, "FileLock")
      .def(py::init([](const std::string& path, const std::string& what, const std::string& mode,
                       double lease_timeout) {
             LockOptions o{parse_lock_mode(mode), lease_timeout};
             py::gil_scoped_release nogil;
             return std::make_unique<FileLock>(posix_fs(), path, what.empty() ? path : what, o);
           }),
           py::arg("path"), py::arg("what") = "", py::kw_only(), py::arg("mode") = "auto",
           py::arg("lease_timeout") = 60.0)
      .def("release", &FileLock::unlock, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("held", &FileLock::held)
      .def_property_readonly("mode", [](const FileLock& l) { return lock_mode_name(l.mode()); })
      .def_property_readonly("owner", [](const FileLock& l) { return owner_dict(l.owner()); })
      .def("__enter__", [](py::object self) { return self; })
      .def(
          "__exit__",
          [](FileLock& l, py::args) {
            py::gil_scoped_release nogil;
            l.unlock();
          });

  m.def(
      "scan",
      [](const std::string& path, bool verify, bool durable) {
        ScanResult r;
        {
          py::gil_scoped_release nogil;
          r = scan_file(path, verify, durable);
        }
        return scan_dict(r);
      },
      py::arg("path"), py::arg("verify") = false, py::arg("durable") = false);
  m.def(
      "read_payload",
      [](const std::string& path, uint64_t seq, py::handle out, unsigned threads, bool durable) {
        BufferView v(out, true);
        py::gil_scoped_release nogil;
        read_payload(path, seq, v.data(), v.size(), threads, durable);
      },
      py::arg("path"), py::arg("seq"), py::arg("out"), py::arg("threads") = 0, py::arg("durable") = false);
  m.def(
      "make_durable",
      [](const std::string& path) {
        py::gil_scoped_release nogil;
        make_durable(posix_fs(), path);
      },
      py::arg("path"),
      "Makes path durable (fdatasync, then fsync of its directory): what a crashed writer left unsynced in "
      "the page cache, and a reader trusts, survives a power loss.");
  m.def(
      "crc32c", [](py::handle data, uint32_t crc) { return crc_of(data, crc, false); }, py::arg("data"),
      py::arg("crc") = 0);
  m.def(
      "crc32c_portable", [](py::handle data, uint32_t crc) { return crc_of(data, crc, true); }, py::arg("data"),
      py::arg("crc") = 0);
  m.def("crc32c_impl", [] { return std::string(crc32c_impl()); });
}
